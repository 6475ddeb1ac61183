"""Searchset Bundles, assembled from stored bytes (re-parsed only for _summary/_elements)."""

from __future__ import annotations

import hashlib

import orjson

from fhir_server.outcome import Issue, operation_outcome
from fhir_server.rest.bundle import assemble, paging_links
from fhir_server.search.request import SearchResult
from fhir_server.search.subset import subset
from fhir_server.spec import Spec


def _entry(base_url: str, doc: dict, mode: str, result: SearchResult, spec: Spec) -> bytes:
    raw = subset(bytes(doc["raw"]), spec, result.request.summary, result.request.elements)
    head = orjson.dumps({"fullUrl": f"{base_url}/{doc['type']}/{doc['id']}"})[:-1]
    return head + b',"resource":' + raw + b',"search":{"mode":"' + mode.encode() + b'"}}'


def search_bundle(result: SearchResult, spec: Spec, base_url: str, path: str) -> bytes:
    """The Bundle of type `searchset`: matches, includes, an outcome for ignored parameters."""
    query = result.criteria.used + result.request.echoed
    if result.request.cursor:
        query = query + [("_cursor", result.request.cursor)]
    links = paging_links(base_url, path, query, result.next_cursor, result.previous_cursor)
    entries = [_entry(base_url, doc, "match", result, spec) for doc in result.matches]
    entries += [_entry(base_url, doc, "include", result, spec) for doc in result.included]
    if result.criteria.ignored:
        outcome = operation_outcome([Issue("not-supported", text, "warning") for text in result.criteria.ignored])
        entries.append(b'{"resource":' + orjson.dumps(outcome) + b',"search":{"mode":"outcome"}}')
    return assemble("searchset", links, result.total, entries)


def search_etag(result: SearchResult) -> str:
    """A weak validator of a search page: what it holds (every matched and included version),
    its total and its links, not the Bundle's own id and time. A client polling a notebook sends
    it back in If-None-Match and gets a 304 while nothing changed."""
    digest = hashlib.sha256()
    for doc in (*result.matches, *result.included):
        digest.update(bytes(doc["raw"]))
        digest.update(b"\x1e")
    digest.update(orjson.dumps([result.total, result.next_cursor, result.previous_cursor, result.criteria.ignored]))
    return f'W/"{digest.hexdigest()[:32]}"'


def unchanged(if_none_match: str | None, etag: str) -> bool:
    return if_none_match is not None and any(tag.strip() in (etag, "*") for tag in if_none_match.split(","))


__all__ = ["search_bundle", "search_etag", "unchanged"]
