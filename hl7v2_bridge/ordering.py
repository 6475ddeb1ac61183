"""Messages for one patient are applied one at a time, in arrival order (within a process).

One FIFO lock per patient with a message in progress; the lock goes away with the patient's
last message, so a bridge that has seen a million patients holds nothing for them.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import AsyncIterator


class PatientTurns:
    """`async with turns.of(patient):` waits for the patient's earlier messages to finish."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}  # patient: (lock, [messages holding or awaiting it])

    @property
    def patients_in_progress(self) -> int:
        return len(self._locks)

    @asynccontextmanager
    async def of(self, patient: str) -> AsyncIterator[None]:
        lock, users = self._locks.setdefault(patient, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:  # asyncio.Lock wakes its waiters first come, first served
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._locks[patient]


__all__ = ["PatientTurns"]
