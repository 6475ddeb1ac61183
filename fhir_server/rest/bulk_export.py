"""Bulk Data `$export` over HTTP (IG 2.0): kick-off at system, Patient and Group level, the
status URL (poll: 202 + X-Progress, then 200 + manifest; DELETE: cancel), and the files.

A job belongs to the client that kicked it off (its `who`): another client's poll, download
or DELETE gets 404, as for a resource it does not reach. Files need the token
(`requiresAccessToken`), are served as written (or gzip-compressed when asked) and expire
with their job.
"""

from __future__ import annotations

import zlib
from datetime import datetime, timezone
from email.utils import format_datetime
from typing import Any, AsyncIterator
from urllib.parse import parse_qsl

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from fhir_server.bulk.files import JOB_ID, ExportFiles
from fhir_server.bulk.jobs import group_members, manifest, plan_job, progress
from fhir_server.bulk.request import parameters_of, read_export
from fhir_server.bulk.worker import ExportWorker
from fhir_server.outcome import FhirError, Issue
from fhir_server.rest.body import read_json
from fhir_server.rest.context import base_url, engine_of, settings_of
from fhir_server.rest.negotiation import FORMAT_PARAMETERS, negotiate
from fhir_server.rest.preconditions import preferences
from fhir_server.rest.responses import outcome_response
from fhir_server.security.policy import ACCESS
from fhir_server.storage.exports import ACTIVE, ExportStore

NDJSON = "application/fhir+ndjson"
POLL_SECONDS = "2"
BUSY_SECONDS = "30"


def _worker(request: Request) -> ExportWorker:
    return request.app.state.export_worker


async def kick_off_system(request: Request) -> Response:
    return await _kick_off(request, "system")


async def kick_off_patients(request: Request) -> Response:
    return await _kick_off(request, "patient")


async def kick_off_group(request: Request) -> Response:
    return await _kick_off(request, "group", request.path_params["id"])


async def _kick_off(request: Request, level: str, group_id: str | None = None) -> Response:
    rendering = negotiate(request)
    asked = preferences(request)
    if "respond-async" not in asked:
        raise FhirError.of(400, "not-supported", "$export runs asynchronously: send the header Prefer: respond-async")
    engine, worker = engine_of(request), _worker(request)
    if request.method == "POST":
        extra = {name for name, _ in request.query_params.multi_items()} - FORMAT_PARAMETERS
        if extra:
            raise FhirError.of(400, "not-supported", f"A POST $export takes its parameters in the body, not the URL ({', '.join(sorted(extra))[:80]})")
        pairs = parameters_of(await read_json(request, settings_of(request).max_body_bytes))
    else:
        pairs = [(k, v) for k, v in request.query_params.multi_items() if k not in FORMAT_PARAMETERS]
    export = read_export(pairs, level, engine.spec.is_resource_type, lambda t: set(engine.spec.structures.get(t, {})),
                         lenient="handling=lenient" in asked)
    members = None
    if group_id is not None:
        engine.check_id(group_id)
        members = group_members(orjson.loads((await engine.read("Group", group_id)).raw or b"{}"))  # 404 as a read would
    base = base_url(request)
    for resource_type, queries in export.type_filters.items():  # a filter calipso cannot apply is the kick-off's 400
        for query in queries:
            await engine.searcher.criteria(resource_type, parse_qsl(query, keep_blank_values=True), base)
    access = ACCESS.get()
    present = await worker.jobs.types_present(sorted(engine.spec.resource_types)) if export.types is None else []
    job = plan_job(export, access, engine.spec, present, datetime.now(timezone.utc), str(request.url), base, members)
    if not await worker.jobs.take_slot(access.who, job["_id"]):
        raise FhirError(429, Issue("throttled", "An export of this client is still running: poll it (or DELETE it) first"),
                        headers={"Retry-After": BUSY_SECONDS})
    try:
        await worker.jobs.insert(job)
    except BaseException:
        await worker.jobs.release_slot(access.who, job["_id"])
        raise
    worker.poke()
    location = f"{base}/$export-status/{job['_id']}"
    issue = Issue("informational", "Export accepted: poll the Content-Location URL", "information")
    return outcome_response(202, [issue], {"Content-Location": location}, rendering)


async def status(request: Request) -> Response:
    job = await _own_job(request)
    if job["status"] in ACTIVE:
        return Response(status_code=202, headers={"X-Progress": progress(job), "Retry-After": POLL_SECONDS})
    expires = {"Expires": format_datetime(job["expires"], usegmt=True)}
    if job["status"] == "failed":
        raise FhirError(500, Issue("exception", job.get("error") or "The export failed"), headers=expires)
    body = manifest(job, base_url(request), requires_token=settings_of(request).auth)
    return JSONResponse(body, 200, headers=expires)


async def cancel(request: Request) -> Response:
    """DELETE on the status URL: the job stops at its next page, its files go now."""
    job = await _own_job(request)
    worker = _worker(request)
    await worker.jobs.delete(job["_id"])
    await worker.files.remove(job["_id"])
    await worker.jobs.release_slot(job["owner"], job["_id"])
    text = "Export cancelled" if job["status"] in ACTIVE else "Export and its files removed"
    return outcome_response(202, [Issue("informational", text, "information")])


async def download(request: Request) -> Response:
    job = await _own_job(request)
    name = request.path_params["name"]
    part = next((p for p in job.get("files", []) if p["name"] == name and p["count"] > 0), None) if job["status"] == "completed" else None
    if part is None:
        raise FhirError.of(404, "not-found", "No such file in this export")
    files: ExportFiles = _worker(request).files
    if not files.path(job["_id"], name).is_file():  # written by another node whose data folder is not shared with this one
        raise FhirError(503, Issue("transient", "This export's files are not on this server node: its exports/ folder must be shared "
                                   "storage (docs/bulk-export.md)"), headers={"Retry-After": "30"})
    chunks = files.read(job["_id"], name, part["bytes"])
    if "gzip" in request.headers.get("accept-encoding", "").lower():
        return StreamingResponse(_gzipped(chunks), media_type=NDJSON, headers={"Content-Encoding": "gzip", "Vary": "Accept-Encoding"})
    return StreamingResponse(chunks, media_type=NDJSON, headers={"Content-Length": str(part["bytes"]), "Vary": "Accept-Encoding"})


async def _gzipped(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    packer = zlib.compressobj(6, zlib.DEFLATED, 31)  # 31: the gzip container
    async for chunk in chunks:
        packed = packer.compress(chunk)
        if packed:
            yield packed
    yield packer.flush()


async def _own_job(request: Request) -> dict[str, Any]:
    """The caller's job named in the URL; 404 for another client's, an expired or an unknown one."""
    jobs: ExportStore = _worker(request).jobs
    job_id = request.path_params["job"]
    job = await jobs.get(job_id) if JOB_ID.fullmatch(job_id) else None
    if job is None or job["owner"] != ACCESS.get().who:
        raise FhirError.of(404, "not-found", "No such export (unknown, cancelled, expired, or another client's)")
    expires = job.get("expires")
    if expires is not None and expires < datetime.now(timezone.utc):
        await jobs.delete(job_id)
        await _worker(request).files.remove(job_id)
        raise FhirError.of(404, "not-found", "This export has expired")
    return job


__all__ = ["cancel", "download", "kick_off_group", "kick_off_patients", "kick_off_system", "status"]
