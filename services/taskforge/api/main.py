"""``taskforge api``: the REST API on TASKFORGE_HTTP_PORT, ops on TASKFORGE_OPS_PORT."""

from __future__ import annotations

import argparse

from taskforge import resources
from taskforge.api.app import create_app
from taskforge.config import Settings


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Serve the API until SIGTERM."""
    return resources.serve("api", settings, create_app, port=settings.http_port)
