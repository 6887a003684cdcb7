"""Tracing: set up from the standard ``OTEL_*`` variables, flushed on exit.

Tracing is on only when an OTLP endpoint is configured (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``
or ``OTEL_EXPORTER_OTLP_ENDPOINT``). While it is off, :data:`ENABLED` is false and every span
helper in :mod:`taskforge.spans` returns before touching OpenTelemetry, so the hot paths pay
one attribute read. While it is on, finished spans go through a ``BatchSpanProcessor``: export
runs in its own thread, a full queue drops spans, and a slow or absent collector never blocks
the event loop nor fails a job.

Variables read here: ``OTEL_EXPORTER_OTLP_PROTOCOL`` (``http/protobuf``, the default, or
``grpc``; ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` wins), ``OTEL_SERVICE_NAME`` (default
``taskforge-<deployable>``), ``OTEL_TRACES_SAMPLER``/``OTEL_TRACES_SAMPLER_ARG``,
``OTEL_SDK_DISABLED`` and ``OTEL_TRACES_EXPORTER=none``. The exporter and the batch processor
read their own (``OTEL_EXPORTER_OTLP_HEADERS``, ``…_TIMEOUT``, ``OTEL_BSP_*``, …).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider, sampling
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from taskforge import __version__
from taskforge.config import ConfigError

log = logging.getLogger("taskforge.telemetry")

ENABLED = False
"""True while spans are recorded and exported; hot paths check it before building spans."""

PROTOCOLS = ("http/protobuf", "grpc")
SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
SHUTDOWN_TIMEOUT = 5.0
"""Seconds the exit flush may take; a collector that does not answer costs no more."""

_tracer: trace.Tracer = trace.NoOpTracer()
_processor: SpanProcessor | None = None


@dataclass(frozen=True)
class TracingConfig:
    """Where and how spans are exported, as resolved from the environment."""

    endpoint: str
    protocol: str
    service_name: str
    sampler: str
    sampler_arg: float | None = None


def _get(environ: Mapping[str, str], *names: str) -> tuple[str, str] | None:
    """The first of ``names`` set to a non-blank value, as (name, value)."""
    for name in names:
        value = environ.get(name, "").strip()
        if value:
            return name, value
    return None


def read_config(service: str, environ: Mapping[str, str] | None = None) -> TracingConfig | None:
    """The tracing configuration, or None when tracing is off.

    Raises :class:`ConfigError` naming the variable whose value cannot be used.
    """
    environ = os.environ if environ is None else environ
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    exporter = environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() or "otlp"
    if exporter == "none":
        return None
    if exporter != "otlp":
        raise ConfigError(
            f"OTEL_TRACES_EXPORTER={exporter!r} is not supported; use otlp (or none for no traces)"
        )
    found = _get(environ, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
    if found is None:
        return None
    endpoint_var, endpoint = found
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"{endpoint_var}={endpoint!r} is not a URL; use e.g. http://collector:4318"
        )
    protocol_var, protocol = _get(
        environ, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"
    ) or ("", "http/protobuf")
    if protocol not in PROTOCOLS:
        raise ConfigError(f"{protocol_var}={protocol!r} is not one of {', '.join(PROTOCOLS)}")
    if protocol == "http/protobuf" and endpoint_var == "OTEL_EXPORTER_OTLP_ENDPOINT":
        # The generic endpoint is a base URL: each signal appends its own path.
        endpoint = endpoint.rstrip("/") + "/v1/traces"
    sampler = environ.get("OTEL_TRACES_SAMPLER", "").strip().lower() or "parentbased_always_on"
    if sampler not in SAMPLERS:
        raise ConfigError(f"OTEL_TRACES_SAMPLER={sampler!r} is not one of {', '.join(SAMPLERS)}")
    sampler_arg = None
    if sampler.endswith("traceidratio"):
        raw = environ.get("OTEL_TRACES_SAMPLER_ARG", "").strip() or "1.0"
        try:
            sampler_arg = float(raw)
        except ValueError:
            sampler_arg = -1.0
        if not 0.0 <= sampler_arg <= 1.0:
            raise ConfigError(
                f"OTEL_TRACES_SAMPLER_ARG={raw!r} is invalid: a ratio from 0 to 1, e.g. 0.1"
            )
    return TracingConfig(
        endpoint=endpoint,
        protocol=protocol,
        service_name=_service_name(service, environ),
        sampler=sampler,
        sampler_arg=sampler_arg,
    )


def _service_name(service: str, environ: Mapping[str, str]) -> str:
    if name := environ.get("OTEL_SERVICE_NAME", "").strip():
        return name
    for pair in environ.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        key, _, value = pair.partition("=")
        if key.strip() == "service.name" and value.strip():
            return value.strip()
    return f"taskforge-{service}"


def make_sampler(config: TracingConfig) -> sampling.Sampler:
    """The sampler named by ``OTEL_TRACES_SAMPLER``."""
    ratio = 1.0 if config.sampler_arg is None else config.sampler_arg
    name = config.sampler.removeprefix("parentbased_")
    root: sampling.Sampler
    if name == "always_on":
        root = sampling.ALWAYS_ON
    elif name == "always_off":
        root = sampling.ALWAYS_OFF
    else:
        root = sampling.TraceIdRatioBased(ratio)
    # Parent-based samplers follow the caller's decision, so a trace is kept or dropped whole.
    return sampling.ParentBased(root) if config.sampler.startswith("parentbased_") else root


def make_exporter(config: TracingConfig) -> SpanExporter:
    """The OTLP exporter for the configured protocol (gRPC is imported only when chosen)."""
    if config.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        return GrpcExporter(endpoint=config.endpoint)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpExporter,
    )

    return HttpExporter(endpoint=config.endpoint)


def setup(service: str, environ: Mapping[str, str] | None = None) -> TracingConfig | None:
    """Turn tracing on for this process if the environment asks for it; the config or None.

    Installs the global tracer provider too, so spans that handlers make with
    ``opentelemetry.trace.get_tracer(...)`` nest under the job's ``process`` span.
    """
    config = read_config(service, environ)
    if config is None:
        return None
    port = urlsplit(config.endpoint).port
    if (config.protocol, port) in (("http/protobuf", 4317), ("grpc", 4318)):
        log.warning(
            "the OTLP endpoint's port is the usual one of the other protocol; spans may not "
            "arrive: set OTEL_EXPORTER_OTLP_PROTOCOL (4317 is grpc, 4318 is http/protobuf)",
            extra={"action": "tracing.port", "endpoint": config.endpoint},
        )
    resource = Resource.create(
        {"service.name": config.service_name, "service.version": __version__}
    )
    provider = TracerProvider(
        resource=resource, sampler=make_sampler(config), shutdown_on_exit=False
    )
    processor = BatchSpanProcessor(make_exporter(config))
    provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    enable(provider, processor)
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        # Failed exports retry inside the exporter; its per-retry warnings would flood the
        # logs. One error per lost batch remains (and every retry at TASKFORGE_LOG_LEVEL=debug).
        logging.getLogger("opentelemetry.exporter").setLevel(logging.ERROR)
    log.info(
        "tracing on",
        extra={
            "action": "tracing.start",
            "endpoint": config.endpoint,
            "protocol": config.protocol,
            "service_name": config.service_name,
            "sampler": config.sampler,
        },
    )
    return config


def enable(provider: trace.TracerProvider, processor: SpanProcessor | None = None) -> None:
    """Record spans with ``provider`` (``setup`` calls this; tests pass their own provider)."""
    global ENABLED, _tracer, _processor
    _tracer = provider.get_tracer("taskforge", __version__)
    _processor = processor
    ENABLED = True


def disable() -> None:
    """Stop recording spans (the provider, if any, is left to its owner)."""
    global ENABLED, _tracer, _processor
    ENABLED = False
    _tracer = trace.NoOpTracer()
    _processor = None


def tracer() -> trace.Tracer:
    """taskforge's tracer (a no-op one while tracing is off)."""
    return _tracer


async def shutdown(timeout: float = SHUTDOWN_TIMEOUT) -> None:
    """Export what is buffered and stop, waiting at most ``timeout`` seconds.

    The flush runs in a daemon thread rather than the loop's executor: asyncio.run joins
    executor threads at exit, and an unanswering collector must not hold the process up.
    """
    processor = _processor
    disable()
    if processor is None:
        return
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def flush() -> None:
        try:
            processor.shutdown()
        finally:
            with contextlib.suppress(RuntimeError):  # the loop may be gone by now
                loop.call_soon_threadsafe(_resolve, done)

    threading.Thread(target=flush, name="taskforge-tracing-flush", daemon=True).start()
    try:
        await asyncio.wait_for(done, timeout)
    except TimeoutError:
        log.warning(
            "tracing flush timed out; spans still buffered are dropped",
            extra={"action": "tracing.flush_timeout", "timeout": timeout},
        )


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def tracing_ctx(_: Any) -> AsyncIterator[None]:
    """A cleanup_ctx that flushes spans when the app stops (tracing was set up by ``serve``)."""
    yield
    await shutdown()
