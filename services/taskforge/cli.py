"""The ``taskforge`` command: one subcommand per deployable, plus dev, migrate and bench.

Each deployable lives in ``taskforge.<name>.main`` and exposes ``run(settings) -> int``;
it is imported only when chosen, so ``taskforge api`` never loads kopf.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

from taskforge import __version__
from taskforge.argtypes import positive_int
from taskforge.config import ConfigError, Settings, load_settings

DEPLOYABLES = {
    "api": "REST API on TASKFORGE_HTTP_PORT: submit, inspect, cancel and retry jobs",
    "scheduler": "dispatcher: moves due jobs from PostgreSQL into the Redis streams; cron",
    "worker": "consumes TASKFORGE_QUEUES and runs handlers from TASKFORGE_HANDLERS",
    "reaper": "rescues jobs of dead workers and lost stream entries; retention; trimming",
    "operator": "kopf operator scaling worker Deployments on queue backlog",
}

EPILOG = """\
configuration comes from TASKFORGE_* environment variables (see the README);
a bad value stops the command with a message naming the variable.

examples:
  taskforge dev                      # everything on this machine, embedded stores
  TASKFORGE_QUEUES=default,mail taskforge worker
  taskforge migrate                  # apply the schema and exit
"""


def _run_module(module: str, settings: Settings, args: argparse.Namespace) -> int:
    runner: Callable[..., int] = importlib.import_module(module).run
    return runner(settings, args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taskforge",
        description="taskforge: jobs over REST, kept in PostgreSQL, delivered by Redis Streams.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"taskforge {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    dev = commands.add_parser(
        "dev",
        help="the whole system on this machine (embedded stores when URLs are unset)",
        description="Start api, scheduler, worker(s) and reaper as separate processes. "
        "PostgreSQL and Redis come from TASKFORGE_POSTGRES_URL/TASKFORGE_REDIS_URL, or embedded "
        "ones keeping their data under --data-dir when those are unset. Ctrl-C stops everything.",
    )
    dev.add_argument("--workers", type=positive_int, default=1, help="worker processes (default 1)")
    dev.add_argument(
        "--api", type=positive_int, default=1, help="api processes sharing the port (default 1)"
    )
    dev.add_argument("--data-dir", default=".taskforge", help="embedded data (default .taskforge)")
    dev.add_argument("--no-reaper", action="store_true", help="do not start the reaper")

    for name, summary in DEPLOYABLES.items():
        commands.add_parser(name, help=summary, description=summary)

    migrate = commands.add_parser(
        "migrate",
        help="apply the database schema and exit",
        description="Apply pending "
        "migrations under an advisory lock (safe when several replicas start at once). The "
        "checksum of every applied migration is recorded; a database where one was applied "
        "from other text than this release's file is refused, naming the file.",
    )
    migrate.add_argument(
        "--repair",
        action="store_true",
        help="record this release's checksums for migrations already applied whose file "
        "changed (only for an edit you know changes nothing, such as a comment), then apply "
        "pending ones",
    )
    extra_commands: list[Callable[[Any], None]] = []
    for module in ("taskforge.bench", "taskforge.client.cli"):
        try:
            extra_commands.append(importlib.import_module(module).add_commands)
        except ImportError:
            continue
    for add in extra_commands:
        add(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``taskforge`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"taskforge: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "dev":
        return _run_module("taskforge.dev", settings, args)
    if args.command == "migrate":
        return _run_module("taskforge.migrate", settings, args)
    if args.command in DEPLOYABLES:
        return _run_module(f"taskforge.{args.command}.main", settings, args)
    handler: Callable[[Settings, argparse.Namespace], int] = args.handler
    return handler(settings, args)
