"""Which processes build the question path: portal processes do, at start-up; indexing-only processes never do."""

from __future__ import annotations

from typing import Any

from portal.runtime import _shared_embedder


class _Model:
    """Records what the runtime asks of a loaded model (loading the real one is tested in tests/rag)."""

    def __init__(self) -> None:
        self.prepared = 0
        self.query_path = "torch-float32"

    def prepare_query_path(self) -> bool:
        self.prepared += 1
        return True


def test_an_indexing_process_never_builds_the_question_path_and_a_portal_process_does() -> None:
    loads: list[Any] = []

    def loader(config: Any) -> _Model:
        loads.append(config)
        return _Model()

    config = ("test-config", id(loads))  # a key no other test shares
    worker = _shared_embedder(config, loader, questions=False)
    assert worker.prepared == 0
    portal = _shared_embedder(config, loader)
    assert portal is worker and portal.prepared == 1 and len(loads) == 1
