"""History Bundles, assembled from the stored bytes of each version without re-parsing them."""

from __future__ import annotations

import uuid
from urllib.parse import urlencode

import orjson

from fhir_server.engine import HistoryPage, fhir_instant, utc_now
from fhir_server.rest.responses import etag
from fhir_server.storage.store import Version


def _entry(base_url: str, version: Version) -> bytes:
    """One Bundle.entry: the version's bytes inside request/response metadata."""
    if version.method == "POST":
        request = {"method": "POST", "url": version.type}
    else:
        request = {"method": version.method or "PUT", "url": f"{version.type}/{version.id}"}
    created = version.method == "POST" or (version.method == "PUT" and version.version == 1)
    response = {
        "status": "201 Created" if created else "200 OK",
        "etag": etag(version.version),
        "lastModified": fhir_instant(version.updated),
    }
    head = orjson.dumps({"fullUrl": f"{base_url}/{version.type}/{version.id}"})[:-1]
    tail = orjson.dumps({"request": request, "response": response})[1:]
    if version.raw is None:
        return head + b"," + tail
    return head + b',"resource":' + version.raw + b"," + tail


def history_bundle(
    page: HistoryPage, base_url: str, path: str, query: list[tuple[str, str]]
) -> bytes:
    """The Bundle of type `history` for one page; `query` is the request's own parameters."""
    kept = [(k, v) for k, v in query if k != "_cursor"]
    links = [{"relation": "self", "url": link_url(base_url, path, query)}]
    if page.next_cursor:
        links.append({"relation": "next", "url": link_url(base_url, path, kept + [("_cursor", page.next_cursor)])})
    head: dict[str, object] = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": fhir_instant(utc_now())},
        "type": "history",
    }
    if page.total is not None:
        head["total"] = page.total
    head["link"] = links
    opening = orjson.dumps(head)[:-1]
    if not page.versions:
        return opening + b"}"
    entries = b",".join(_entry(base_url, v) for v in page.versions)
    return opening + b',"entry":[' + entries + b"]}"


def link_url(base_url: str, path: str, query: list[tuple[str, str]]) -> str:
    return f"{base_url}{path}" + (f"?{urlencode(query)}" if query else "")


__all__ = ["history_bundle", "link_url"]
