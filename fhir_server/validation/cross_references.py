"""What one part of a resource says about another, checked as the HL7 Java validator does:

- a narrative's internal link (`<a href="#x">`) leads somewhere in the document: an `id` or
  `name` anchor of one of its narratives, or the `id` of one of its elements or resources
  (test case bundle-with-contained);
- in a Bundle (a history aside, where one resource is there several times by design), a
  reference resolves to at most one entry: two entries with the same fullUrl (allowed with
  different versions, bdl-7) make an unversioned reference to it ambiguous (test case
  bundle-document-versioned-references-bad). References are resolved by R4's rules
  (Bundle, "Resolving references in Bundles"): absolute ones against fullUrls, relative ones
  against the base of their entry's fullUrl.
"""

from __future__ import annotations

from typing import Any, Iterator

from fhir_server.outcome import Issue
from fhir_server.search.references import RESTFUL
from fhir_server.validation.narrative import internal_links

LINK_MARKERS = ('href="#', "href='#")
MAX_ISSUES = 20


def cross_reference_issues(resource: dict[str, Any], resource_type: str) -> list[Issue]:
    return (_unresolved_links(resource, resource_type) + _ambiguous_references(resource, resource_type))[:MAX_ISSUES]


# -- narrative links ---------------------------------------------------------------------------


def _unresolved_links(resource: dict[str, Any], resource_type: str) -> list[Issue]:
    if not any(marker in div for div, _ in _narratives(resource, None) for marker in LINK_MARKERS):
        return []  # the common case: no location built, nothing parsed
    narratives = list(_narratives(resource, resource_type))
    targets = _element_ids(resource)
    found: list[tuple[list[str], str]] = []
    for div, location in narratives:
        links, anchors = internal_links(div)
        targets |= anchors
        found.append((links, location))
    return [Issue("invalid", f"The narrative links to '#{link[:64]}', which is nowhere in the resource", expression=location)
            for links, location in found for link in dict.fromkeys(links) if link not in targets]


def _narratives(value: Any, location: str | None) -> Iterator[tuple[str, str]]:
    for item, where in _objects(value, location):
        div = item.get("div")
        if isinstance(div, str) and "status" in item:
            yield div, f"{where}.div"


def _element_ids(value: Any) -> set[str]:
    return {item["id"] for item, _ in _objects(value, None) if isinstance(item.get("id"), str)}


def _objects(value: Any, location: str | None) -> Iterator[tuple[dict[str, Any], str]]:
    """Every JSON object inside `value` (itself included), with its location (none asked:
    ""), iteratively."""
    stack = [(value, location)]
    while stack:
        current, where = stack.pop()
        if isinstance(current, dict):
            yield current, where or ""
            stack.extend((child, None if where is None else f"{where}.{key}")
                         for key, child in current.items() if isinstance(child, (dict, list)))
        elif isinstance(current, list):
            stack.extend((child, None if where is None else f"{where}[{index}]")
                         for index, child in enumerate(current) if isinstance(child, (dict, list)))


# -- references inside a Bundle ----------------------------------------------------------------


def _ambiguous_references(bundle: dict[str, Any], resource_type: str) -> list[Issue]:
    if resource_type != "Bundle" or bundle.get("type") == "history":
        return []
    entries = [e for e in bundle.get("entry") or [] if isinstance(e, dict)]
    versions: dict[Any, list[Any]] = {}  # fullUrl -> the versionIds of its entries, one per entry
    for entry in entries:
        versions.setdefault(entry.get("fullUrl"), []).append(_version(entry))
    if all(len(found) == 1 for found in versions.values()):
        return []  # every fullUrl once: nothing can match twice
    issues: list[Issue] = []
    for index, entry in enumerate(entries):
        resource = entry.get("resource")
        if not isinstance(resource, dict):
            continue
        for reference, location in _references(resource, f"{resource_type}.entry[{index}].resource"):
            matches = _matches(reference, entry.get("fullUrl"), versions)
            if matches > 1:
                issues.append(Issue("invalid", f"The reference {reference[:100]} matches {matches} entries of the Bundle",
                                    expression=location))
                if len(issues) >= MAX_ISSUES:
                    return issues
    return issues


def _references(value: Any, location: str) -> Iterator[tuple[str, str]]:
    for item, where in _objects(value, location):
        reference = item.get("reference")
        if isinstance(reference, str) and not reference.startswith("#"):
            yield reference, f"{where}.reference"


def _matches(reference: str, own_full_url: Any, versions: dict[Any, list[Any]]) -> int:
    """How many entries `reference`, made in the entry whose fullUrl is `own_full_url`, resolves to
    (`versions`: each fullUrl's entries' versionIds)."""
    parsed = RESTFUL.match(reference)
    version = parsed.group("version") if parsed else None
    target = reference.split("/_history/", 1)[0] if version else reference
    if parsed and not parsed.group("base"):  # relative: against the base of the entry's own fullUrl
        own = RESTFUL.match(own_full_url) if isinstance(own_full_url, str) else None
        if own is None or not own.group("base"):
            return 0  # no RESTful base to resolve it against: left to the server
        target = f"{own.group('base')}{parsed.group('type')}/{parsed.group('id')}"
    found = versions.get(target, [])
    return len(found) if version is None else found.count(version)


def _version(entry: dict[str, Any]) -> Any:
    resource = entry.get("resource")
    meta = resource.get("meta") if isinstance(resource, dict) else None
    return meta.get("versionId") if isinstance(meta, dict) else None


__all__ = ["cross_reference_issues"]
