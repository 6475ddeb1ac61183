"""Which MongoDB calipso runs on: checked at start, refused with a clear message.

calipso commits a write set with the client `bulkWrite` command inside one transaction
(store.py): that command exists from MongoDB 8.0. An older server would fail every write with
a driver error; it is refused at start instead.
"""

from __future__ import annotations

from typing import Any

MINIMUM = (8, 0)


class UnsupportedDatabase(RuntimeError):
    """The database server cannot run calipso."""


def version_problem(version: list[int] | tuple[int, ...] | None, text: str = "") -> str | None:
    """Why a server of this version cannot run calipso (None: it can)."""
    if not version:
        return "the database did not tell its version (buildInfo)"
    if tuple(version[:2]) < MINIMUM:
        return (f"MongoDB {text or '.'.join(map(str, version[:3]))} is too old: calipso needs MongoDB "
                f"{MINIMUM[0]}.{MINIMUM[1]} or later (it writes with the bulkWrite command, new in 8.0)")
    return None


async def check_server(client: Any) -> dict[str, Any]:
    """The server's buildInfo; UnsupportedDatabase unless it can run calipso."""
    info: dict[str, Any] = await client.server_info()
    problem = version_problem(info.get("versionArray"), str(info.get("version", "")))
    if problem is not None:
        raise UnsupportedDatabase(problem)
    return info


def is_embedded(info: dict[str, Any]) -> bool:
    """Whether the server is the embedded SecantusDB (it says so in its buildInfo): its search
    workarounds (windows, candidate re-matching) are for it alone; MongoDB gets plain queries."""
    return "secantusVersion" in info


__all__ = ["MINIMUM", "UnsupportedDatabase", "check_server", "is_embedded", "version_problem"]
