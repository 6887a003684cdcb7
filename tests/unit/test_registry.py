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
