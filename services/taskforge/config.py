"""Configuration: every ``TASKFORGE_*`` variable, parsed once into a frozen dataclass.

A bad value stops start-up with :class:`ConfigError`, whose message names the variable,
what it holds and what would be accepted.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, TypeVar

T = TypeVar("T")

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/taskforge"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
QUEUE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ConfigError(ValueError):
    """A configuration variable holds a value taskforge cannot use."""


def parse_duration(text: str) -> float:
    """Seconds from ``250ms``, ``5s``, ``15m``, ``2h``, ``7d`` or a plain number of seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration; use e.g. 250ms, 5s, 15m, 2h, 7d or 30")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def parse_bool(text: str) -> bool:
    """``1/true/yes/on`` or ``0/false/no/off`` (any case)."""
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"{text!r} is not a boolean; use true or false")


def parse_list(text: str) -> tuple[str, ...]:
    """Comma-separated values, blanks dropped."""
    return tuple(item.strip() for item in text.split(",") if item.strip())


def parse_queues(text: str) -> tuple[str, ...]:
    queues = parse_list(text)
    if not queues:
        raise ValueError("no queue named; give at least one, e.g. default")
    for queue in queues:
        if not QUEUE_NAME.fullmatch(queue):
            raise ValueError(f"queue {queue!r} is invalid; use 1-64 letters, digits, '_', '.', '-'")
    return queues


def parse_tokens(text: str) -> tuple[str, ...]:
    """API tokens as ``sha256:<hex>`` digests; a plain token is hashed here, never kept."""
    digests = []
    for token in parse_list(text):
        if token.startswith("sha256:"):
            hexpart = token.removeprefix("sha256:").lower()
            if not re.fullmatch(r"[0-9a-f]{64}", hexpart):
                raise ValueError("a sha256: token digest must be 64 hex characters")
            digests.append(hexpart)
        else:
            digests.append(hashlib.sha256(token.encode()).hexdigest())
    return tuple(digests)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"{text!r} must be a whole number of at least 1")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError(f"{text!r} is not a TCP port (0-65535)")
    return value


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in allowed:
            raise ValueError(f"{text!r} is not one of {', '.join(allowed)}")
        return value

    return parse


def _positive_duration(text: str) -> float:
    value = parse_duration(text)
    if value <= 0:
        raise ValueError(f"{text!r} must be longer than zero")
    return value


@dataclass(frozen=True)
class Settings:
    """Everything a deployable reads from its environment: field ``x`` is ``TASKFORGE_X``."""

    postgres_url: str = DEFAULT_POSTGRES_URL
    redis_url: str = DEFAULT_REDIS_URL
    http_host: str = "0.0.0.0"
    http_port: int = 8080
    ops_port: int = 9090
    handlers: tuple[str, ...] = ()
    queues: tuple[str, ...] = ("default",)
    worker_concurrency: int = 128
    max_attempts: int = 5
    job_timeout: float = 300.0
    backoff_base: float = 5.0
    backoff_max: float = 900.0
    visibility_timeout: float = 60.0
    shutdown_grace: float = 25.0
    poll_interval: float = 1.0
    dispatch_batch: int = 500
    dispatch_linger: float = 0.005
    max_body_bytes: int = 1_048_576
    api_tokens: tuple[str, ...] = ()
    rate_limit: float = 0.0
    log_level: str = "info"
    log_format: str = "json"
    max_deliveries: int = 5
    reaper_interval: float = 5.0
    retention_completed: float = 7 * 86400.0
    retention_dead: float = 30 * 86400.0
    consumer_idle: float = 3600.0
    pool_size: int = 10
    trace_url_template: str = ""

    @property
    def lease_seconds(self) -> float:
        """How long a claim holds a job without a heartbeat: the visibility timeout."""
        return self.visibility_timeout

    @property
    def heartbeat_interval(self) -> float:
        """Heartbeats run at a third of the lease so two may be missed before it lapses."""
        return max(self.visibility_timeout / 3.0, 0.05)


_PARSERS: dict[str, Callable[[str], Any]] = {
    "postgres_url": str,
    "redis_url": str,
    "http_host": str,
    "http_port": _port,
    "ops_port": _port,
    "handlers": parse_list,
    "queues": parse_queues,
    "worker_concurrency": _positive_int,
    "max_attempts": _positive_int,
    "job_timeout": _positive_duration,
    "backoff_base": parse_duration,
    "backoff_max": parse_duration,
    "visibility_timeout": _positive_duration,
    "shutdown_grace": parse_duration,
    "poll_interval": _positive_duration,
    "dispatch_batch": _positive_int,
    "dispatch_linger": parse_duration,
    "max_body_bytes": _positive_int,
    "api_tokens": parse_tokens,
    "rate_limit": float,
    "log_level": _choice("debug", "info", "warning", "error"),
    "log_format": _choice("json", "console"),
    "max_deliveries": _positive_int,
    "reaper_interval": _positive_duration,
    "retention_completed": _positive_duration,
    "retention_dead": _positive_duration,
    "consumer_idle": _positive_duration,
    "pool_size": _positive_int,
    "trace_url_template": str,
}


def env_name(field_name: str) -> str:
    """The environment variable behind a settings field."""
    return "TASKFORGE_" + field_name.upper()


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Parse ``TASKFORGE_*`` variables; raise :class:`ConfigError` naming the first bad one."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for field in fields(Settings):
        name = env_name(field.name)
        raw = environ.get(name)
        if raw is None or raw == "":
            continue
        try:
            values[field.name] = _PARSERS[field.name](raw)
        except ValueError as exc:
            shown = "<hidden>" if field.name == "api_tokens" else repr(raw)
            raise ConfigError(f"{name}={shown} is invalid: {exc}") from None
    values.update(overrides)
    settings = Settings(**values)
    if settings.backoff_max < settings.backoff_base:
        raise ConfigError(
            f"TASKFORGE_BACKOFF_MAX ({settings.backoff_max}s) is shorter than "
            f"TASKFORGE_BACKOFF_BASE ({settings.backoff_base}s); raise the maximum"
        )
    return settings
