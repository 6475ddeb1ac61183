"""The one retry policy of optimistic writes. An attempt that lost a race to another writer (a
version conflict at commit, a conditional create's guard taken) wrote nothing; it is tried again
from a fresh read after a jittered, growing pause (storage back_off), a bounded number of times,
then the client gets a 409 to retry later. A client that named the version it expected
(If-Match) is never retried for: that conflict is its 412.
"""

from __future__ import annotations

from typing import Awaitable, Callable, TypeVar

from fhir_server.outcome import FhirError
from fhir_server.storage.store import back_off

T = TypeVar("T")

PLAN_ATTEMPTS = 10  # a plan of several resources (a Bundle, a conditional create, the guide)
RESOURCE_ATTEMPTS = 30  # one resource many clients update at once (each attempt is cheap)


class LostRace(Exception):
    """The attempt lost to a concurrent writer and wrote nothing: try again."""


async def retrying(attempt: Callable[[], Awaitable[T]], gave_up: str, attempts: int = PLAN_ATTEMPTS) -> T:
    """`attempt()` until it does not lose a race; 409 with `gave_up` after `attempts` losses."""
    for number in range(attempts):
        try:
            return await attempt()
        except LostRace:
            await back_off(number)
    raise FhirError.of(409, "conflict", gave_up)


__all__ = ["LostRace", "PLAN_ATTEMPTS", "RESOURCE_ATTEMPTS", "retrying"]
