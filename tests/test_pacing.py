"""Long work (a Bundle) gives way to short work (reads, single writes, HL7 messages)."""

from __future__ import annotations

import asyncio

import pytest

from fhir_server.engine.pacing import Workload


async def test_a_long_task_waits_while_short_work_is_at_work_and_goes_on_when_it_ends() -> None:
    workload = Workload(slice_seconds=0, longest_pause_seconds=60)  # it would wait a minute if not woken
    order: list[str] = []
    short_started, release = asyncio.Event(), asyncio.Event()

    async def short() -> None:
        with workload.working():
            order.append("short starts")
            short_started.set()
            await release.wait()
            order.append("short ends")

    async def long() -> None:
        with workload.working(), workload.long_task() as pacer:
            await short_started.wait()
            order.append("long turns")
            await pacer.turn()
            order.append("long goes on")

    reading = asyncio.create_task(short())
    bundle = asyncio.create_task(long())
    for _ in range(20):
        await asyncio.sleep(0)
    assert order == ["short starts", "long turns"]  # the long task is waiting
    release.set()
    await asyncio.wait_for(asyncio.gather(reading, bundle), 5)
    assert order == ["short starts", "long turns", "short ends", "long goes on"]
    assert workload.at_work == 0 and workload.giving_way == 0


async def test_a_long_task_alone_or_beside_long_tasks_only_never_waits() -> None:
    workload = Workload(slice_seconds=0, longest_pause_seconds=60)

    async def long(turns: int) -> int:
        with workload.working(), workload.long_task() as pacer:
            for _ in range(turns):
                await pacer.turn()
        return turns

    assert await asyncio.wait_for(long(50), 5) == 50
    assert await asyncio.wait_for(asyncio.gather(long(50), long(50)), 5) == [50, 50]


async def test_a_long_task_is_never_starved() -> None:
    """Short work that never ends: the long task still goes on after each bounded pause."""
    workload = Workload(slice_seconds=0, longest_pause_seconds=0.001)
    with workload.working():  # a short request at work all along
        with workload.working(), workload.long_task() as pacer:
            for _ in range(5):
                await asyncio.wait_for(pacer.turn(), 5)
    assert workload.at_work == 0


async def test_background_work_rests_after_each_piece_only_while_requests_are_served(monkeypatch: pytest.MonkeyPatch) -> None:
    workload = Workload()
    rests: list[float] = []
    real_sleep = asyncio.sleep

    async def recorded(seconds: float) -> None:
        rests.append(seconds)
        await real_sleep(0)

    with workload.working(), workload.long_task() as pacer:
        monkeypatch.setattr(asyncio, "sleep", recorded)
        pacer._piece_started -= 0.005  # a piece of work of 5 ms, nobody served: no rest
        workload.last_done -= 1.0
        await pacer.breathe(0.5)
        assert rests == []
        with workload.working():  # a request at work: rest as long as the piece took
            pacer._piece_started -= 0.005
            await pacer.breathe(0.5)
        assert len(rests) == 1 and 0.005 <= rests[0] < 0.02
        pacer._piece_started -= 1.0  # a long piece just after a request: a short rest at most
        await pacer.breathe(0.5)
        assert rests[1] == 0.02
        pacer._piece_started -= 0.005  # a share of 1: never rests
        await pacer.breathe(1.0)
        assert len(rests) == 2
