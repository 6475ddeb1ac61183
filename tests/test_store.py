"""The store against the real database: transient failures, time bounds."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone

from fhir_server.app import connect
from fhir_server.storage.store import ResourceStore, Write, at_or_after


def _write(n: int, updated: datetime) -> Write:
    return Write(type="Patient", id=f"p{n}", version=1, updated=updated, method="POST", raw=b'{"resourceType":"Patient"}', replaces=None)


async def test_transient_conflicts_are_retried_not_surfaced(database_uri: str) -> None:
    """On a database whose collections do not exist yet, concurrent transactions that create
    them conflict (WriteConflict, TransientTransactionError); every commit must still land."""
    client = connect(database_uri)
    try:
        store = ResourceStore(client, f"fresh_{uuid.uuid4().hex[:12]}")  # no ensure_indexes: nothing exists
        now = datetime.now(timezone.utc).replace(microsecond=0)
        await asyncio.gather(*(store.commit(_write(n, now)) for n in range(60)))
        assert await store.db["resources"].count_documents({}) == 60
        assert await store.db["history"].count_documents({}) == 60
        assert await store.db["history"].count_documents({"pending": True}) == 60
    finally:
        await client.close()


async def test_at_or_after_is_exact_to_the_microsecond(database_uri: str) -> None:
    client = connect(database_uri)
    try:
        store = ResourceStore(client, f"bounds_{uuid.uuid4().hex[:12]}")
        await store.ensure_indexes()
        base = datetime(2026, 11, 22, 10, 0, 0, 564000, tzinfo=timezone.utc)
        for n in range(3):
            await store.commit(_write(n, base + timedelta(milliseconds=n)))
        history = store.db["history"]
        assert await history.count_documents({"updated": at_or_after(base)}) == 3
        assert await history.count_documents({"updated": at_or_after(base + timedelta(microseconds=1))}) == 2
        assert await history.count_documents({"updated": at_or_after(base + timedelta(milliseconds=2))}) == 1
        assert await history.count_documents({"updated": at_or_after(base + timedelta(microseconds=2001))}) == 0
    finally:
        await client.close()


def test_a_mongodb_older_than_8_is_refused_with_a_clear_reason() -> None:
    from fhir_server.storage.versions import version_problem

    assert version_problem([8, 2, 11, 0]) is None
    assert version_problem([8, 0, 0, 0]) is None
    said = version_problem([7, 0, 14, 0], "7.0.14")
    assert said is not None and "7.0.14" in said and "8.0" in said
    assert version_problem(None) is not None


async def test_the_embedded_database_passes_the_start_up_check(database_uri: str) -> None:
    from fhir_server.app import connect
    from fhir_server.storage.versions import check_server

    client = connect(database_uri)
    try:
        await check_server(client)  # raises UnsupportedDatabase otherwise
    finally:
        await client.close()
