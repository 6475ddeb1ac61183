"""What export jobs keep in the database: the job (what to export, for whom, where it stands),
and one slot per client (one running export each).

A job is claimed by one worker at a time through a lease it renews at every checkpoint; a
worker that dies leaves the lease to expire, and the next one resumes from the last checkpoint.
Every checkpoint is conditional on the worker still holding the job: a cancelled job (its
document deleted) or one taken over stops its old worker at its next page.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo import ASCENDING, ReturnDocument
from pymongo.errors import DuplicateKeyError

from fhir_server.storage.store import RESOURCES, ResourceStore

JOBS = "export_jobs"
SLOTS = "export_slots"
ACTIVE = ("accepted", "running")


class ExportStore:
    def __init__(self, store: ResourceStore):
        self._jobs = store.db[JOBS]
        self._slots = store.db[SLOTS]
        self._resources = store.db[RESOURCES]

    async def ensure_indexes(self) -> None:
        await self._jobs.create_index([("status", ASCENDING), ("created", ASCENDING)], name="by_status")

    async def types_present(self, known: list[str]) -> list[str]:
        """Those of the `known` types the database holds (current versions, deleted ones
        included): one indexed look-up per type, each short (a `distinct` decodes the whole
        collection on the embedded database, in one go that holds its other clients)."""
        found = []
        for resource_type in known:
            if await self._resources.find_one({"type": resource_type}, {"_id": 1}) is not None:
                found.append(resource_type)
        return found

    # -- one running export per client -----------------------------------------------------------

    async def take_slot(self, owner: str, job_id: str) -> bool:
        """The client's slot for this job; False while another export of the client is active."""
        try:
            await self._slots.insert_one({"_id": owner, "job": job_id})
            return True
        except DuplicateKeyError:
            pass
        slot = await self._slots.find_one({"_id": owner})
        held = slot.get("job") if slot else None
        if held is not None and await self._jobs.count_documents({"_id": held, "status": {"$in": list(ACTIVE)}}, limit=1):
            return False
        # the slot outlived its job (a crash between finishing the job and freeing it): take it over
        taken = await self._slots.find_one_and_update({"_id": owner, "job": held}, {"$set": {"job": job_id}})
        return taken is not None

    async def release_slot(self, owner: str, job_id: str) -> None:
        await self._slots.delete_one({"_id": owner, "job": job_id})

    # -- jobs ------------------------------------------------------------------------------------

    async def insert(self, job: dict[str, Any]) -> None:
        await self._jobs.insert_one(job)

    async def get(self, job_id: str) -> dict[str, Any] | None:
        return await self._jobs.find_one({"_id": job_id})

    async def delete(self, job_id: str) -> dict[str, Any] | None:
        """Remove a job (cancelled, downloaded or expired); the job as it was."""
        return await self._jobs.find_one_and_delete({"_id": job_id})

    async def claim(self, worker: str, now: datetime, until: datetime) -> dict[str, Any] | None:
        """The oldest active job no live worker holds, now held by `worker` until `until`."""
        free = {"status": {"$in": list(ACTIVE)}, "$or": [{"lease_until": None}, {"lease_until": {"$lt": now}}]}
        if await self._jobs.find_one(free, {"_id": 1}) is None:
            return None  # a read first: the idle workers' look, every few seconds, writes nothing
        return await self._jobs.find_one_and_update(
            free, {"$set": {"status": "running", "worker": worker, "lease_until": until, "started": now}, "$inc": {"attempts": 1}},
            sort=[("created", ASCENDING)], return_document=ReturnDocument.AFTER)

    async def checkpoint(self, job_id: str, worker: str, fields: dict[str, Any]) -> bool:
        """Record progress (and renew the lease) while `worker` still holds the job."""
        done = await self._jobs.update_one({"_id": job_id, "worker": worker, "status": "running"}, {"$set": fields})
        return done.matched_count == 1

    async def expired(self, now: datetime, limit: int = 100) -> list[dict[str, Any]]:
        """Finished jobs whose files are past their expiry."""
        return [job async for job in self._jobs.find({"expires": {"$lt": now}}, {"_id": 1}).limit(limit)]


__all__ = ["ACTIVE", "ExportStore", "JOBS", "SLOTS"]
