"""``taskforge migrate``: apply the schema and exit."""

from __future__ import annotations

import argparse
import asyncio
import sys

from taskforge.config import Settings
from taskforge.logs import configure_logging
from taskforge.store import (
    CONNECT_ERRORS,
    MigrationMismatch,
    describe_connect_error,
    migrate_url,
)


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Apply pending migrations to TASKFORGE_POSTGRES_URL (``--repair``: record the
    checksums of this release's files for migrations already applied)."""
    configure_logging("migrate", settings.log_level, settings.log_format)
    try:
        applied = asyncio.run(migrate_url(settings.postgres_url, repair=args.repair))
    except MigrationMismatch as exc:
        print(f"taskforge migrate: {exc}", file=sys.stderr)
        return 2
    except CONNECT_ERRORS as exc:
        print(
            f"taskforge migrate: {describe_connect_error(exc)}. "
            "The server, database and user come from TASKFORGE_POSTGRES_URL.",
            file=sys.stderr,
        )
        return 1
    print(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else ""))
    return 0
