"""`POST /fhir`: transaction and batch Bundles in, transaction-response / batch-response out."""

from __future__ import annotations

from datetime import datetime, timezone
from email.utils import format_datetime, parsedate_to_datetime
from http import HTTPStatus
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from fhir_server.engine import fhir_instant
from fhir_server.engine.pacing import Pacer
from fhir_server.engine.bundle_entries import BundleLimits, BundleRequest, EntryIndex, EntryResult, read_bundle, read_request
from fhir_server.engine.transaction import run_batch, run_transaction
from fhir_server.outcome import FhirError, Issue, operation_outcome
from fhir_server.rest.body import read_json
from fhir_server.rest.bundle import assemble
from fhir_server.rest.context import base_url, engine_of, settings_of
from fhir_server.rest.negotiation import negotiate
from fhir_server.rest.preconditions import return_preference
from fhir_server.rest.responses import etag, fhir_response
from fhir_server.rest.subrequest import SubResponse, subrequest


async def transaction_or_batch(request: Request) -> Response:
    """A Bundle is long work: between its entries, other requests go first (engine/pacing.py)."""
    with engine_of(request).workload.long_task() as pacer:
        return await _transaction_or_batch(request, pacer)


async def _transaction_or_batch(request: Request, pacer: Pacer) -> Response:
    rendering = negotiate(request)
    body = await read_json(request, settings_of(request).max_bundle_bytes)
    kind, response_entries = await apply_bundle(request, body, pacer)
    bundle = assemble(f"{kind}-response", [], None, response_entries)
    return fhir_response(bundle, 200, None, rendering)


async def apply_bundle(request: Request, body: Any, pacer: Pacer) -> tuple[str, list[bytes]]:
    """Run a transaction or batch Bundle; its kind and the response entries, in request order
    (the CdL base posts its translated Bundles here too)."""
    settings, engine, base = settings_of(request), engine_of(request), base_url(request)
    limits = BundleLimits(settings.max_bundle_entries, settings.conditional_delete_multiple)
    kind, entries = read_bundle(body, limits)
    results: dict[EntryIndex, EntryResult] = {}
    requests: list[BundleRequest] = []
    for index, entry in enumerate(entries):
        await pacer.turn()
        try:
            requests.append(read_request(index, entry, engine, base))
        except FhirError as error:
            if kind == "transaction":
                raise
            results[index] = EntryResult(error.status, error=error)
    run = run_transaction if kind == "transaction" else run_batch
    results.update(await run(engine, requests, base, limits, pacer=pacer))
    reads = {r.index: await _read(request, r) for r in requests if not r.writes}
    preference = return_preference(request)
    return kind, [
        _read_entry(reads[i]) if i in reads else _write_entry(results[i], base, preference) for i in range(len(entries))
    ]


async def _read(request: Request, entry: BundleRequest) -> SubResponse:
    headers = {}
    if entry.if_none_match:
        headers["If-None-Match"] = entry.if_none_match
    if entry.if_modified_since:
        headers["If-Modified-Since"] = _http_date(entry.if_modified_since)
    return await subrequest(request, entry.method, entry.url, headers)


def _http_date(instant: str) -> str:
    """`ifModifiedSince` is a FHIR instant in the Bundle and an HTTP date on the wire."""
    try:
        moment = datetime.fromisoformat(instant.replace("Z", "+00:00"))
    except ValueError:
        return instant
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return format_datetime(moment.astimezone(timezone.utc), usegmt=True)


def _status(code: int) -> str:
    return f"{code} {HTTPStatus(code).phrase}"


def _write_entry(result: EntryResult, base: str, preference: str) -> bytes:
    response: dict[str, Any] = {"status": _status(result.status)}
    entry: dict[str, Any] = {}
    if result.error is not None:
        response["outcome"] = operation_outcome(result.error.issues)
        return orjson.dumps({"response": response})
    version = result.version
    if version is not None:
        entry["fullUrl"] = f"{base}/{version.type}/{version.id}"
        if not version.deleted:
            response["location"] = f"{version.type}/{version.id}/_history/{version.version}"
        response["etag"] = etag(version.version)
        response["lastModified"] = fhir_instant(version.updated)
        if preference == "representation" and version.raw is not None:
            entry["resource"] = orjson.Fragment(version.raw)
        elif preference == "OperationOutcome":
            text = f"{version.type}/{version.id} version {version.version}: {HTTPStatus(result.status).phrase}"
            response["outcome"] = operation_outcome([Issue("informational", text, "information")])
    entry["response"] = response
    return orjson.dumps(entry)


def _read_entry(sub: SubResponse) -> bytes:
    response: dict[str, Any] = {"status": _status(sub.status)}
    for header, field in (("etag", "etag"), ("last-modified", "lastModified"), ("location", "location")):
        if header in sub.headers:
            response[field] = _last_modified(sub.headers[header]) if field == "lastModified" else sub.headers[header]
    entry: dict[str, Any] = {"response": response}
    if sub.body and sub.status < 400:
        entry["resource"] = orjson.Fragment(sub.body)
    elif sub.body:
        response["outcome"] = orjson.Fragment(sub.body)
    return orjson.dumps(entry)


def _last_modified(http_date: str) -> str:
    try:
        return fhir_instant(parsedate_to_datetime(http_date))
    except (TypeError, ValueError):
        return http_date


__all__ = ["apply_bundle", "transaction_or_batch"]
