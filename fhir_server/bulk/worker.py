"""The export worker of an API node: claims the oldest job no live worker holds, runs it under
its owner's access, finishes it (or fails it clearly), and removes what has expired.

Every API node runs one; jobs are shared through the database, so a job kicked off on one node
may run on another, and a job whose worker died (a restart, a kill -9) is resumed from its last
checkpoint by the first worker to find its lease expired. A job interrupted MAX_ATTEMPTS times
is failed rather than retried for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable, Callable

from fhir_server.bulk.files import ExportFiles
from fhir_server.bulk.runner import ExportRun, JobLost, RunSettings
from fhir_server.engine import Engine
from fhir_server.security.audit import AuditTrail, export_event
from fhir_server.security.policy import Access, acting_as
from fhir_server.security.tokens import Claims
from fhir_server.storage.exports import ExportStore

log = logging.getLogger("calipso.export")

MAX_ATTEMPTS = 5
IDLE_SECONDS = 5.0  # a worker with nothing to do looks for jobs this often (one kicked off on its own node wakes it at once)
SWEEP_SECONDS = 60.0


@dataclass(frozen=True)
class WorkerSettings:
    run: RunSettings
    retention_seconds: float = 3600.0  # how long a finished export's files stay


class ExportWorker:
    def __init__(self, engine: Engine, exports: ExportStore, files: ExportFiles,
                 access_of: Callable[[Claims | None], Awaitable[Access]], settings: WorkerSettings, audit: AuditTrail | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)):
        self._engine, self._access_of, self._settings, self._audit, self._clock = engine, access_of, settings, audit, clock
        self.jobs, self.files = exports, files  # the routes read and cancel jobs and serve files through them
        self.name = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._swept = 0.0
        self._stopping = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="export-worker")

    async def stop(self) -> None:
        """Stop at once: a job running here is resumed by the next worker once its lease lapses."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=5)  # the database may be gone: do not wait on it

    def poke(self) -> None:
        """A job was kicked off here: look now."""
        self._wake.set()

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                await self._sweep()
                job = await self.jobs.claim(self.name, self._clock(), self._lease_end())
                if job is not None:
                    await self._run(job)
                    continue
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - the worker outlives a database hiccup
                log.error("export worker error type=%s", type(error).__name__)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(IDLE_SECONDS):
                    await self._wake.wait()

    def _lease_end(self) -> datetime:
        return self._clock() + timedelta(seconds=self._settings.run.lease_seconds)

    async def _run(self, job: dict[str, Any]) -> None:
        job_id = job["_id"]
        if job.get("attempts", 0) > MAX_ATTEMPTS:
            await self._finish(job, "failed", f"The export was interrupted {MAX_ATTEMPTS} times; kick it off again")
            return
        claims = Claims(**job["claims"]) if job.get("claims") else None
        access = await self._access_of(claims)
        engine = self._engine
        log.info("export started job=%s attempt=%s", job_id, job.get("attempts"))
        try:
            # a long task of this process's workload: it gives way to requests between pages
            with acting_as(access), engine.workload.working(), engine.workload.long_task() as pacer:
                final = await ExportRun(job, self.name, self.jobs, engine, self.files, pacer, self._settings.run, self._clock).run()
        except JobLost:
            if await self.jobs.get(job_id) is None:  # cancelled: what this run wrote goes too
                await self.files.remove(job_id)
            log.info("export stopped job=%s (cancelled or taken over)", job_id)
            return
        except asyncio.CancelledError:
            raise  # the node stops: the lease expires and another worker resumes the job
        except Exception as error:  # noqa: BLE001 - a job's failure is the job's, not the worker's
            log.error("export failed job=%s type=%s", job_id, type(error).__name__)
            await self._finish(job, "failed", f"The export failed ({type(error).__name__}); kick it off again")
            return
        await self._finish(job, "completed", final=final)

    async def _finish(self, job: dict[str, Any], status: str, error: str | None = None, final: dict[str, Any] | None = None) -> None:
        """The job's last write (with the run's final record of its parts), its slot freed."""
        now = self._clock()
        fields: dict[str, Any] = {**(final or {}), "status": status, "finished": now, "lease_until": None,
                                  "expires": now + timedelta(seconds=self._settings.retention_seconds)}
        if error is not None:
            fields["error"] = error
        if not await self.jobs.checkpoint(job["_id"], self.name, fields):
            return
        await self.jobs.release_slot(job["owner"], job["_id"])
        exported = (final or job).get("exported", 0)
        log.info("export %s job=%s resources=%s", status, job["_id"], exported)
        if self._audit is not None:
            self._audit.record(export_event(job["_id"], job["owner"], status, exported, now))

    async def _sweep(self) -> None:
        """Remove the expired exports' jobs and files (at most once a minute)."""
        loop_time = asyncio.get_running_loop().time()
        if loop_time - self._swept < SWEEP_SECONDS:
            return
        self._swept = loop_time
        for job in await self.jobs.expired(self._clock()):
            await self.files.remove(job["_id"])
            await self.jobs.delete(job["_id"])


__all__ = ["ExportWorker", "WorkerSettings"]
