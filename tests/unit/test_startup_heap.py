"""A deployable's startup heap is collected once, then left out of every later collection."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from taskforge.resources import freeze_startup_heap


class Node:
    """An object that can sit in a reference cycle."""

    def __init__(self) -> None:
        self.me: Node | None = None


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """Leave the test process's collector as it found it."""
    yield
    gc.unfreeze()


def cycle() -> Node:
    node = Node()
    node.me = node
    return node


def test_startup_garbage_is_collected_not_frozen(unfrozen):
    garbage = weakref.ref(cycle())  # only the cycle keeps it alive
    assert garbage() is not None
    freeze_startup_heap()
    assert garbage() is None


def test_what_is_alive_is_frozen_out_of_later_collections(unfrozen):
    kept = cycle()
    frozen = freeze_startup_heap()
    assert frozen == gc.get_freeze_count() > 0
    tracked = {id(obj) for obj in gc.get_objects()}
    assert id(kept) not in tracked  # a full collection no longer traverses it
    after = cycle()
    assert id(after) in {id(obj) for obj in gc.get_objects()}  # new objects are collected
    kept.me = None
    del after
