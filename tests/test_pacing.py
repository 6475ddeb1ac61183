"""Long work (a Bundle) gives way to short work (reads, single writes, HL7 messages)."""

from __future__ import annotations

import asyncio

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
