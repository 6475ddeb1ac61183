"""`calipso doctor`: is an operator's MongoDB ready for calipso, before go-live?

Checks, each answered OK, WARN or FAIL with its reason:
- reachable: the server answers;
- version: MongoDB 8.0 or later (storage/versions.py);
- topology: a replica set or a sharded cluster (calipso's writes are multi-document
  transactions; a standalone mongod refuses them);
- durable writes: a probe document is written with `w: majority, j: true` and removed;
- transactions: a probe transaction commits;
- indexes: the indexes calipso relies on exist in the database (WARN when missing: calipso
  creates them at its first start, which takes time on a large collection).
The probes write to the collection `calipso_doctor` of the named database and remove what they wrote.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pymongo import AsyncMongoClient, WriteConcern
from pymongo.errors import PyMongoError

from fhir_server.storage.store import INDEXES
from fhir_server.storage.versions import version_problem

PROBES = "calipso_doctor"
DURABLE = WriteConcern(w="majority", j=True)  # what calipso's writes ask for (storage/connection.py)


@dataclass(frozen=True)
class Finding:
    check: str
    verdict: str  # OK, WARN, FAIL
    detail: str

    def line(self) -> str:
        return f"{self.verdict:<4}  {self.check:<14} {self.detail}"


async def examine(uri: str, database: str, timeout_ms: int = 5000) -> list[Finding]:
    """Every check against the MongoDB at `uri` (its `database`); never raises for the database's sake."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, serverSelectionTimeoutMS=timeout_ms, tz_aware=True)
    try:
        try:
            info = await client.server_info()
        except PyMongoError as error:
            return [Finding("reachable", "FAIL", f"no answer: {type(error).__name__}")]
        findings = [Finding("reachable", "OK", "the server answers")]
        problem = version_problem(info.get("versionArray"), str(info.get("version", "")))
        findings.append(Finding("version", "FAIL", problem) if problem else Finding("version", "OK", f"MongoDB {info.get('version')}"))
        findings.append(await _topology(client))
        findings.append(await _durable_write(client, database))
        findings.append(await _transaction(client, database))
        findings.append(await _indexes(client, database))
        return findings
    finally:
        await client.close()


async def _topology(client: AsyncMongoClient[dict[str, Any]]) -> Finding:
    hello = await client.admin.command("hello")
    if hello.get("setName"):
        return Finding("topology", "OK", f"replica set {hello['setName']}")
    if hello.get("msg") == "isdbgrid":
        return Finding("topology", "OK", "sharded cluster (mongos): see docs/architecture.md for shard keys")
    return Finding("topology", "FAIL", "a standalone server: calipso writes in multi-document transactions, which need a replica set")


async def _durable_write(client: AsyncMongoClient[dict[str, Any]], database: str) -> Finding:
    probes = client[database].get_collection(PROBES).with_options(write_concern=DURABLE)
    try:
        await probes.insert_one({"_id": "durable-write-probe"})
        await probes.delete_one({"_id": "durable-write-probe"})
    except PyMongoError as error:
        return Finding("durable writes", "FAIL", f"w: majority, j: true refused: {type(error).__name__}: {str(error)[:120]}")
    return Finding("durable writes", "OK", "w: majority, j: true acknowledged")


async def _transaction(client: AsyncMongoClient[dict[str, Any]], database: str) -> Finding:
    probes = client[database].get_collection(PROBES)
    try:
        if PROBES not in await client[database].list_collection_names():
            await client[database].create_collection(PROBES, check_exists=False)
        async with client.start_session() as session:
            async with await session.start_transaction(write_concern=DURABLE):
                await probes.insert_one({"_id": "transaction-probe"}, session=session)
                await probes.delete_one({"_id": "transaction-probe"}, session=session)
    except PyMongoError as error:
        return Finding("transactions", "FAIL", f"a probe transaction failed: {type(error).__name__}: {str(error)[:120]}")
    finally:
        try:
            await client[database].drop_collection(PROBES)
        except PyMongoError:
            pass
    return Finding("transactions", "OK", "a probe transaction committed")


async def _indexes(client: AsyncMongoClient[dict[str, Any]], database: str) -> Finding:
    missing = []
    for collection, indexes in INDEXES.items():
        present = {tuple(spec["key"].items()) async for spec in await client[database][collection].list_indexes()}
        for keys, options in indexes:
            wanted = tuple(keys)
            if wanted not in present:
                missing.append(f"{collection}:{options.get('name') or ','.join(k for k, _ in wanted)}")
    if missing:
        return Finding("indexes", "WARN", f"{len(missing)} missing (calipso creates them at its first start): {', '.join(missing[:6])}")
    return Finding("indexes", "OK", "every index calipso queries with is there")


__all__ = ["Finding", "examine"]
