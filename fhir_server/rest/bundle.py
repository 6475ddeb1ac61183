"""The parts every Bundle this server writes shares: head, links, entries as bytes."""

from __future__ import annotations

import uuid
from urllib.parse import urlencode

import orjson

from fhir_server.engine import fhir_instant, utc_now


def link_url(base_url: str, path: str, query: list[tuple[str, str]]) -> str:
    return f"{base_url}{path}" + (f"?{urlencode(query)}" if query else "")


def paging_links(
    base_url: str, path: str, query: list[tuple[str, str]], next_cursor: str | None, previous_cursor: str | None = None
) -> list[dict[str, str]]:
    """`self` (the request as understood), `next` and `previous` (the same plus a cursor)."""
    kept = [(k, v) for k, v in query if k != "_cursor"]
    links = [{"relation": "self", "url": link_url(base_url, path, query)}]
    for relation, cursor in (("next", next_cursor), ("previous", previous_cursor)):
        if cursor:
            links.append({"relation": relation, "url": link_url(base_url, path, kept + [("_cursor", cursor)])})
    return links


def assemble(bundle_type: str, links: list[dict[str, str]], total: int | None, entries: list[bytes]) -> bytes:
    """A Bundle around entries already serialised (stored resources are never re-parsed)."""
    head: dict[str, object] = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": fhir_instant(utc_now())},
        "type": bundle_type,
    }
    if total is not None:
        head["total"] = total
    if links:
        head["link"] = links  # R4: an empty array is not valid JSON for FHIR
    opening = orjson.dumps(head)[:-1]
    if not entries:
        return opening + b"}"
    return opening + b',"entry":[' + b",".join(entries) + b"]}"


__all__ = ["assemble", "link_url", "paging_links"]
