"""History Bundles, assembled from the stored bytes of each version without re-parsing them."""

from __future__ import annotations

import orjson

from fhir_server.engine import HistoryPage, fhir_instant
from fhir_server.rest.bundle import assemble, paging_links
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
    links = paging_links(base_url, path, query, page.next_cursor)
    return assemble("history", links, page.total, [_entry(base_url, v) for v in page.versions])


__all__ = ["history_bundle"]
