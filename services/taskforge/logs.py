"""Structured logging: one JSON object per line (or readable console lines in ``dev``).

Job-related log calls pass ``extra={"action": ..., "job_id": ..., "queue": ..., "type": ...}``;
every key in ``extra`` lands in the JSON line, and the active trace's ids are added when a
span is recording.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


try:
    from opentelemetry import trace as _trace
except ImportError:  # pragma: no cover - tracing is a dependency, but logs must not need it
    _trace = None  # type: ignore[assignment]


def _trace_ids() -> dict[str, str]:
    if _trace is None:  # pragma: no cover
        return {}
    context = _trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}


class _Seconds:
    """The ``YYYY-MM-DDTHH:MM:SS`` of a time, formatted once per second: a worker logs a
    line per finished job, and strftime was a tenth of a line's cost."""

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def __call__(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return self._text


class JsonFormatter(logging.Formatter):
    """Render a record as one JSON line with its ``extra`` fields and trace ids."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service
        self._seconds = _Seconds()

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": f"{self._seconds(record.created)}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        line.update(_trace_ids())
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


class ConsoleFormatter(logging.Formatter):
    """Short human lines for ``taskforge dev``: time, service, level, message, extras."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(
            f"{key}={value}"
            for key, value in record.__dict__.items()
            if key not in _STANDARD and not key.startswith("_")
        )
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        text = f"{stamp} {self.service:<9} {record.levelname:<7} {record.getMessage()}"
        if extras:
            text += f"  {extras}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def configure_logging(service: str, level: str = "info", fmt: str = "json") -> None:
    """Send all logs to stderr in the chosen format; quiet chatty libraries."""
    handler = logging.StreamHandler(sys.stderr)
    formatter: logging.Formatter = (
        JsonFormatter(service) if fmt == "json" else ConsoleFormatter(service)
    )
    handler.setFormatter(formatter)
    # Record attributes neither formatter writes (the logging HOWTO's "Optimization"): the
    # caller's file and line (a walk of the stack per record), thread, process and
    # multiprocessing names. At info a worker logs a line per finished job.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiohttp.access", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
