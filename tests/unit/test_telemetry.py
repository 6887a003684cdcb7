"""Tracing configuration from the standard OTEL_* variables, and the W3C helpers."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import sampling
from opentelemetry.trace import SpanContext, TraceFlags, TraceState, get_current_span

from taskforge import spans, telemetry
from taskforge.config import ConfigError

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def config(**environ: str) -> telemetry.TracingConfig | None:
    return telemetry.read_config("worker", environ)


def test_tracing_is_off_without_an_endpoint():
    assert config() is None
    assert config(OTEL_SERVICE_NAME="x", OTEL_TRACES_SAMPLER="always_on") is None
    assert config(OTEL_EXPORTER_OTLP_ENDPOINT="  ") is None


def test_tracing_is_off_when_the_sdk_or_the_exporter_is_disabled():
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
    assert config(**endpoint, OTEL_SDK_DISABLED="true") is None
    assert config(**endpoint, OTEL_TRACES_EXPORTER="none") is None


def test_generic_http_endpoint_gets_the_traces_path_and_defaults_apply():
    found = config(OTEL_EXPORTER_OTLP_ENDPOINT="http://collector:4318/")
    assert found == telemetry.TracingConfig(
        endpoint="http://collector:4318/v1/traces",
        protocol="http/protobuf",
        service_name="taskforge-worker",
        sampler="parentbased_always_on",
    )


def test_traces_endpoint_wins_and_is_used_as_given():
    found = config(
        OTEL_EXPORTER_OTLP_ENDPOINT="http://generic:4318",
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT="http://traces:4318/custom/path",
    )
    assert found is not None and found.endpoint == "http://traces:4318/custom/path"


def test_grpc_endpoint_is_used_as_given():
    found = config(
        OTEL_EXPORTER_OTLP_ENDPOINT="http://collector:4317", OTEL_EXPORTER_OTLP_PROTOCOL="grpc"
    )
    assert found is not None
    assert (found.endpoint, found.protocol) == ("http://collector:4317", "grpc")
    traces_protocol = config(
        OTEL_EXPORTER_OTLP_ENDPOINT="http://collector:4317",
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        OTEL_EXPORTER_OTLP_TRACES_PROTOCOL="grpc",
    )
    assert traces_protocol is not None and traces_protocol.protocol == "grpc"


def test_service_name_from_otel_service_name_or_resource_attributes():
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}
    named = config(**endpoint, OTEL_SERVICE_NAME="billing-worker")
    assert named is not None and named.service_name == "billing-worker"
    attributed = config(**endpoint, OTEL_RESOURCE_ATTRIBUTES="team=a, service.name=mail-worker")
    assert attributed is not None and attributed.service_name == "mail-worker"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ("OTEL_TRACES_SAMPLER", "sometimes"),
        ("OTEL_TRACES_EXPORTER", "zipkin"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
    ],
)
def test_a_bad_value_names_its_variable(variable, value):
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", variable: value}
    with pytest.raises(ConfigError, match=variable):
        telemetry.read_config("api", environ)


@pytest.mark.parametrize("arg", ["abc", "1.5", "-0.1"])
def test_ratio_sampler_argument_must_be_a_ratio(arg):
    with pytest.raises(ConfigError, match="OTEL_TRACES_SAMPLER_ARG"):
        config(
            OTEL_EXPORTER_OTLP_ENDPOINT="http://c:4318",
            OTEL_TRACES_SAMPLER="parentbased_traceidratio",
            OTEL_TRACES_SAMPLER_ARG=arg,
        )


def test_samplers_follow_their_names():
    def make(name: str, arg: str = "") -> sampling.Sampler:
        found = config(
            OTEL_EXPORTER_OTLP_ENDPOINT="http://c:4318",
            OTEL_TRACES_SAMPLER=name,
            OTEL_TRACES_SAMPLER_ARG=arg,
        )
        assert found is not None
        return telemetry.make_sampler(found)

    assert make("always_off") is sampling.ALWAYS_OFF
    ratio = make("traceidratio", "0.25")
    assert isinstance(ratio, sampling.TraceIdRatioBased) and ratio.rate == 0.25
    assert isinstance(make("parentbased_always_on"), sampling.ParentBased)
    assert "0.5" in make("parentbased_traceidratio", "0.5").get_description()


def test_header_values_and_context_from_round_trip():
    context = SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("vendor", "v1")]),
    )
    traceparent, tracestate = spans.header_values(context)
    assert (traceparent, tracestate) == (TRACEPARENT, "vendor=v1")
    parsed = get_current_span(spans.context_from(traceparent, tracestate)).get_span_context()
    assert (parsed.trace_id, parsed.span_id, parsed.trace_state.get("vendor")) == (
        context.trace_id,
        context.span_id,
        "v1",
    )


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "garbage",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
        "00-" + "0" * 32 + "-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-" + "0" * 16 + "-01",
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        TRACEPARENT + "-extra",
    ],
)
def test_malformed_or_empty_traceparent_is_no_context(value):
    assert spans.context_from(value) is None
    assert spans.valid_traceparent(value) is None


def test_valid_traceparent_passes_through():
    assert spans.valid_traceparent(TRACEPARENT) == TRACEPARENT


def test_a_later_version_with_more_fields_is_understood():
    later = "cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-what-comes-next"
    parsed = get_current_span(spans.context_from(later)).get_span_context()
    assert (parsed.trace_id, parsed.is_remote) == (0x0AF7651916CD43DD8448EB211C80319C, True)


def test_an_unsampled_parent_stays_unsampled():
    unsampled = TRACEPARENT[:-2] + "00"
    parsed = get_current_span(spans.context_from(unsampled)).get_span_context()
    assert not parsed.trace_flags.sampled


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_exporter_for_each_protocol(protocol):
    found = config(
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:1", OTEL_EXPORTER_OTLP_PROTOCOL=protocol
    )
    assert found is not None
    exporter = telemetry.make_exporter(found)
    try:
        assert ("grpc" in type(exporter).__module__) is (protocol == "grpc")
    finally:
        exporter.shutdown()
