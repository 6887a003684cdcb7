"""Handler registry and loading from TASKFORGE_HANDLERS."""

from __future__ import annotations

import sys
import types

import pytest

from taskforge.worker.registry import HandlerImportError, Registry, load


def test_builtins_are_always_registered():
    assert {"ping", "sleep", "fail", "dead"} <= set(load(()).types)


def test_duplicate_type_is_refused():
    registry = Registry()
    registry.job("a")(lambda ctx, p: None)
    with pytest.raises(ValueError, match="already registered"):
        registry.job("a")(lambda ctx, p: None)


def test_load_by_module_and_attribute(monkeypatch):
    module = types.ModuleType("tf_test_handlers")
    module.jobs = Registry()  # type: ignore[attr-defined]
    module.jobs.job("custom.one")(lambda ctx, p: 1)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tf_test_handlers", module)
    assert "custom.one" in load(["tf_test_handlers:jobs"]).types


@pytest.mark.parametrize("path", ["no_such_module_xyz", "taskforge.jobs:Status", "taskforge.jobs"])
def test_bad_handler_path_names_the_variable(path):
    with pytest.raises(HandlerImportError, match="TASKFORGE_HANDLERS"):
        load([path])


def _module_with(monkeypatch, name: str, *job_types: str) -> None:
    module = types.ModuleType(name)
    module.registry = Registry()  # type: ignore[attr-defined]
    for job_type in job_types:
        module.registry.job(job_type)(lambda ctx, p: None)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, name, module)


def test_a_handler_for_a_built_in_type_is_refused_naming_both(monkeypatch):
    _module_with(monkeypatch, "tf_test_noop", "mine", "noop")
    with pytest.raises(HandlerImportError) as refused:
        load(["tf_test_noop"])
    message = str(refused.value)
    assert "TASKFORGE_HANDLERS: 'tf_test_noop' registers job type 'noop'" in message
    assert "is built in" in message and "ping" in message and "rename one" in message


def test_two_entries_for_one_type_are_refused_naming_the_later(monkeypatch):
    _module_with(monkeypatch, "tf_test_first", "report.build")
    _module_with(monkeypatch, "tf_test_second", "report.build")
    with pytest.raises(HandlerImportError) as refused:
        load(["tf_test_first", "tf_test_second"])
    message = str(refused.value)
    assert "'tf_test_second' registers job type 'report.build'" in message
    assert "an earlier entry of TASKFORGE_HANDLERS registers it too" in message


def test_the_worker_command_refuses_a_duplicate_type_without_a_traceback(monkeypatch, capsys):
    from taskforge.config import Settings
    from taskforge.worker import main as worker_main

    _module_with(monkeypatch, "tf_test_ping", "ping")
    code = worker_main.run(Settings(handlers=("tf_test_ping",)), None)  # type: ignore[arg-type]
    assert code == 2
    assert "taskforge worker: TASKFORGE_HANDLERS: 'tf_test_ping'" in capsys.readouterr().err


async def test_an_async_handler_behind_a_plain_decorator_is_awaited():
    import functools

    from taskforge.worker.registry import Handler

    def plain(func):
        @functools.wraps(func)
        def wrapper(ctx, payload):  # not async: returns the coroutine func makes
            return func(ctx, payload)

        return wrapper

    @plain
    async def handler(ctx, payload):
        return {"doubled": payload["n"] * 2}

    class Callable:
        async def __call__(self, ctx, payload):
            return "called"

    registry = Registry()
    registry.job("wrapped")(handler)
    registry.job("object")(Callable())
    wrapped, obj = registry.get("wrapped"), registry.get("object")
    assert isinstance(wrapped, Handler) and isinstance(obj, Handler)
    assert await wrapped(None, {"n": 21}) == {"doubled": 42}  # type: ignore[arg-type]
    assert await obj(None, {}) == "called"  # type: ignore[arg-type]
