"""Configuration parsing: durations, lists, and errors that name the variable."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskforge.config import ConfigError, load_settings, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("5s", 5.0),
        ("15m", 900.0),
        ("2h", 7200.0),
        ("7d", 604800.0),
        ("30", 30.0),
        ("1.5", 1.5),
        (" 10s ", 10.0),
    ],
)
def test_durations_accept_units_and_plain_seconds(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5 minutes", "-1s", "1y", "s", "1e3"])
def test_bad_durations_are_rejected(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@given(st.integers(min_value=0, max_value=10**6))
def test_milliseconds_are_thousandths(n):
    assert parse_duration(f"{n}ms") == pytest.approx(n / 1000)


def test_defaults_match_design():
    settings = load_settings({})
    assert settings.http_port == 8080
    assert settings.ops_port == 9090
    assert settings.max_attempts == 5
    assert settings.job_timeout == 300
    assert settings.backoff_base == 5
    assert settings.backoff_max == 900
    assert settings.queues == ("default",)


def test_environment_is_parsed_once_into_settings():
    settings = load_settings(
        {
            "TASKFORGE_QUEUES": "default, mail",
            "TASKFORGE_JOB_TIMEOUT": "15m",
            "TASKFORGE_WORKER_CONCURRENCY": "8",
            "TASKFORGE_HANDLERS": "app.jobs:registry,other",
        }
    )
    assert settings.queues == ("default", "mail")
    assert settings.job_timeout == 900
    assert settings.worker_concurrency == 8
    assert settings.handlers == ("app.jobs:registry", "other")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TASKFORGE_HTTP_PORT", "eighty"),
        ("TASKFORGE_HTTP_PORT", "70000"),
        ("TASKFORGE_JOB_TIMEOUT", "soon"),
        ("TASKFORGE_JOB_TIMEOUT", "0"),
        ("TASKFORGE_WORKER_CONCURRENCY", "0"),
        ("TASKFORGE_QUEUES", "bad queue!"),
        ("TASKFORGE_LOG_FORMAT", "xml"),
        ("TASKFORGE_MAX_ATTEMPTS", "-2"),
        ("TASKFORGE_QUEUES", "mail\nx"),
    ],
)
def test_bad_value_names_the_variable(name, value):
    with pytest.raises(ConfigError) as raised:
        load_settings({name: value})
    assert name in str(raised.value)


def test_backoff_max_below_base_is_rejected():
    with pytest.raises(ConfigError, match="TASKFORGE_BACKOFF_MAX"):
        load_settings({"TASKFORGE_BACKOFF_BASE": "10s", "TASKFORGE_BACKOFF_MAX": "1s"})


def test_plain_tokens_are_kept_only_as_digests_and_never_shown():
    settings = load_settings({"TASKFORGE_API_TOKENS": "s3cret, sha256:" + "a" * 64})
    assert settings.api_tokens == (hashlib.sha256(b"s3cret").hexdigest(), "a" * 64)
    with pytest.raises(ConfigError) as raised:
        load_settings({"TASKFORGE_API_TOKENS": "sha256:nothex-s3cret"})
    assert "s3cret" not in str(raised.value)


def test_dispatch_linger_defaults_to_5ms_and_zero_turns_it_off():
    assert load_settings({}).dispatch_linger == 0.005
    assert load_settings({"TASKFORGE_DISPATCH_LINGER": "0"}).dispatch_linger == 0.0
    assert load_settings({"TASKFORGE_DISPATCH_LINGER": "20ms"}).dispatch_linger == 0.02
    with pytest.raises(ConfigError, match="TASKFORGE_DISPATCH_LINGER"):
        load_settings({"TASKFORGE_DISPATCH_LINGER": "-5ms"})
