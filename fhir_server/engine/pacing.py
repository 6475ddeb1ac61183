"""Long work gives way to short work: a Bundle steps aside, now and then, while other requests
(reads, single writes, HL7 messages) are at work, so that they are not slowed down by each of
its entries.

Why not only `sleep(0)` between entries: the event loop is first in, first out. A Bundle that
yields with `sleep(0)` is back in the queue at once, and a reader that needs ten turns of the
loop (request, checks, query sent, answer read, response) waits for ten entries. So a long task
works for a slice, then, while short requests are at work, waits until they are done (woken by
the last one, or after a bounded pause, so that it is never starved). Alone, or beside other
long tasks only, it never waits. Figures: bench/RESULTS.md, large_body.

Background work (a bulk export) also breathes: giving way between pieces is not enough when
each piece is a database query that holds the database's other clients (the embedded one
does). While requests are being served, it rests after each piece about as long as the piece
took, so that a request meets at most one of its queries. Figures: bench/RESULTS.md, export.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager


class Workload:
    """How many requests are at work in this process, and how many of them are long tasks
    that give way to the others."""

    def __init__(self, slice_seconds: float = 0.002, longest_pause_seconds: float = 0.008):
        self.at_work = 0
        self.giving_way = 0
        self.slice_seconds = slice_seconds  # a long task works this long between looks ...
        self.longest_pause_seconds = longest_pause_seconds  # ... then waits at most this long for short work to end
        self._waiting: list[asyncio.Future[None]] = []
        self.last_done = 0.0  # when a request last finished (time.monotonic())

    @contextmanager
    def working(self) -> Iterator[None]:
        """Around one request's (or HL7 message's) work."""
        self.at_work += 1
        try:
            yield
        finally:
            self.at_work -= 1
            self.last_done = time.monotonic()
            if self._waiting and not self.short_work_at_work():
                self._wake()

    @contextmanager
    def long_task(self) -> Iterator["Pacer"]:
        """Inside `working()`: this request gives way to short ones, through the pacer."""
        self.giving_way += 1
        try:
            yield Pacer(self)
        finally:
            self.giving_way -= 1

    def short_work_at_work(self) -> bool:
        return self.at_work > self.giving_way

    def serving(self, within: float) -> bool:
        """Short work at work now, or a request finished less than `within` seconds ago."""
        return self.short_work_at_work() or time.monotonic() - self.last_done < within

    async def quiet(self) -> None:
        """Until no short work is at work, or the longest pause has passed."""
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[None] = loop.create_future()
        self._waiting.append(woken)
        timer = loop.call_later(self.longest_pause_seconds, _settle, woken)
        try:
            await woken
        finally:
            timer.cancel()
            if woken in self._waiting:
                self._waiting.remove(woken)

    def _wake(self) -> None:
        waiting, self._waiting = self._waiting, []
        for woken in waiting:
            _settle(woken)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Pacer:
    """Call `turn()` between the pieces of a long task."""

    def __init__(self, workload: Workload | None):
        self._workload = workload
        self._since = time.perf_counter()
        self._piece_started = time.monotonic()

    async def turn(self) -> None:
        workload = self._workload
        if (workload is None or time.perf_counter() - self._since < workload.slice_seconds
                or not workload.short_work_at_work()):
            await asyncio.sleep(0)
        else:
            await workload.quiet()
            self._since = time.perf_counter()
        self._piece_started = time.monotonic()  # waiting is not work: `breathe` counts from here

    async def breathe(self, share: float, within: float = 0.01, longest: float = 0.02) -> None:
        """Background work (a bulk export): while requests are being served, rest after each
        piece so that it takes at most `share` of the time (its database queries too), and
        requests meet at most one of its pieces at a time. A rest lasts `longest` at most."""
        workload = self._workload
        worked = time.monotonic() - self._piece_started
        if workload is not None and 0 < share < 1 and workload.serving(within):
            await asyncio.sleep(min(worked * (1 - share) / share, longest))
        self._piece_started = time.monotonic()


NO_PACING = Pacer(None)  # short work itself (an HL7 message's plan): only lets others in between pieces


__all__ = ["NO_PACING", "Pacer", "Workload"]
