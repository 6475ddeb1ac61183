"""Searchset Bundles, assembled from stored bytes (re-parsed only for _summary/_elements)."""

from __future__ import annotations

import uuid

import orjson

from fhir_server.engine import fhir_instant, utc_now
from fhir_server.outcome import Issue, operation_outcome
from fhir_server.rest.history_bundle import link_url
from fhir_server.search.executor import SearchResult
from fhir_server.search.subset import subset
from fhir_server.spec import Spec


def _entry(base_url: str, doc: dict, mode: str, result: SearchResult, spec: Spec) -> bytes:
    raw = subset(bytes(doc["raw"]), spec, result.request.summary, result.request.elements)
    head = orjson.dumps({"fullUrl": f"{base_url}/{doc['type']}/{doc['id']}"})[:-1]
    return head + b',"resource":' + raw + b',"search":{"mode":"' + mode.encode() + b'"}}'


def search_bundle(result: SearchResult, spec: Spec, base_url: str, path: str) -> bytes:
    """The Bundle of type `searchset`: matches, includes, an outcome for ignored parameters."""
    echoed = result.criteria.used + result.request.echoed
    links = [{"relation": "self", "url": link_url(base_url, path, echoed)}]
    if result.next_cursor:
        links.append({"relation": "next", "url": link_url(base_url, path, echoed + [("_cursor", result.next_cursor)])})
    head: dict[str, object] = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": fhir_instant(utc_now())},
        "type": "searchset",
    }
    if result.total is not None:
        head["total"] = result.total
    head["link"] = links
    entries = [_entry(base_url, doc, "match", result, spec) for doc in result.matches]
    entries += [_entry(base_url, doc, "include", result, spec) for doc in result.included]
    if result.criteria.ignored:
        outcome = operation_outcome([Issue("not-supported", text, "warning") for text in result.criteria.ignored])
        entries.append(b'{"resource":' + orjson.dumps(outcome) + b',"search":{"mode":"outcome"}}')
    opening = orjson.dumps(head)[:-1]
    if not entries:
        return opening + b"}"
    return opening + b',"entry":[' + b",".join(entries) + b"]}"


__all__ = ["search_bundle"]
