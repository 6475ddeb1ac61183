"""The API process's start-up heap is frozen once; what comes after stays collectable."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from fhir_server.heap import freeze_start_up_heap


class Node:
    def __init__(self) -> None:
        self.peer: Node | None = None


@pytest.fixture
def unfrozen_after() -> Iterator[None]:
    yield
    gc.unfreeze()  # the rest of the suite runs with the collector as usual


def test_what_start_up_left_is_out_of_the_collectors_walk(unfrozen_after: None) -> None:
    kept = [[n] for n in range(20_000)]
    frozen = freeze_start_up_heap()
    assert frozen == gc.get_freeze_count() and frozen >= 20_000
    walked = {id(o) for o in gc.get_objects()}
    assert not any(id(item) in walked for item in kept)


def test_a_cycle_made_after_start_up_is_still_collected(unfrozen_after: None) -> None:
    freeze_start_up_heap()
    first, second = Node(), Node()
    first.peer, second.peer = second, first  # a finished request's cycle: only the collector frees it
    gone = weakref.ref(first)
    del first, second
    gc.collect()
    assert gone() is None
