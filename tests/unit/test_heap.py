"""portal.heap: a server process keeps its startup heap out of full garbage collections; other processes do not."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from portal import heap


@pytest.fixture
def fresh_heap_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(heap, "_enabled", False)
    gc.unfreeze()
    yield
    gc.unfreeze()  # the test session itself must not keep what it froze


def test_settle_does_nothing_until_the_process_is_a_server(fresh_heap_state: None) -> None:
    assert heap.settle() is False
    assert gc.get_freeze_count() == 0


def test_settle_freezes_what_is_alive_and_collects_garbage_first(fresh_heap_state: None) -> None:
    class Node:
        def __init__(self) -> None:
            self.other: Node | None = None

    alive = Node()
    garbage_a, garbage_b = Node(), Node()
    garbage_a.other, garbage_b.other = garbage_b, garbage_a  # a cycle only the collector can free
    del garbage_a, garbage_b
    collected_before = gc.get_stats()[2]["collected"]

    heap.enable()
    assert heap.settle() is True

    assert gc.get_freeze_count() > 0
    assert gc.get_stats()[2]["collected"] >= collected_before + 2  # the cycle was collected, not frozen
    # A frozen object is no longer walked by the collector: it is in no generation.
    assert not any(obj is alive for obj in gc.get_objects())
    gc.unfreeze()
    assert any(obj is alive for obj in gc.get_objects())
