"""Rules of R4 datatypes and resources that neither the digest's shapes nor the FHIRPath
invariants express, but which the specification states in prose and the HL7 Java validator
enforces. Each takes one object (already of the right shape) and its location.

- Attachment: `size` is the number of bytes of the content; with `data`, they must agree.
- Bundle: `entry.fullUrl` is an absolute URL (or a urn:uuid / urn:oid) and, when it is a
  RESTful one (`[base]/Type/id`), it agrees with its resource's type and id ("fullUrl SHALL NOT
  disagree with the id in the resource"); each `link.relation` occurs once.
- Coding: `system` is an absolute URI (a code system is named by its canonical URL or urn).
- SearchParameter: a `composite` one has two or more components.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, Callable

from fhir_server.outcome import Issue
from fhir_server.search.references import RESTFUL
from fhir_server.spec import load_spec

ABSOLUTE_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:\S+")


def attachment_issues(attachment: dict[str, Any], path: str) -> list[Issue]:
    size, data = attachment.get("size"), attachment.get("data")
    if not isinstance(size, int) or not isinstance(data, str):
        return []
    try:
        actual = len(base64.b64decode("".join(data.split()), validate=True))
    except (binascii.Error, ValueError):
        return []  # not base64: the primitive's own check says so
    if actual == size:
        return []
    return [Issue("structure", f"Attachment.size is {size} but data holds {actual} bytes", expression=f"{path}.size")]


def bundle_issues(bundle: dict[str, Any], path: str) -> list[Issue]:
    issues = []
    for index, entry in enumerate(bundle.get("entry") or []):
        full_url = entry.get("fullUrl") if isinstance(entry, dict) else None
        if isinstance(full_url, str) and not ABSOLUTE_URL.fullmatch(full_url):
            issues.append(Issue("invalid", f"Bundle.entry.fullUrl must be an absolute URL, not {full_url[:60]!r}",
                                expression=f"{path}.entry[{index}].fullUrl"))
        elif isinstance(full_url, str) and isinstance(entry.get("resource"), dict):
            issues.extend(_full_url_disagreement(full_url, entry["resource"], f"{path}.entry[{index}].fullUrl"))
    seen: set[str] = set()
    for index, link in enumerate(bundle.get("link") or []):
        relation = link.get("relation") if isinstance(link, dict) else None
        if isinstance(relation, str):
            if relation in seen:
                issues.append(Issue("invalid", f"The link relation '{relation[:30]}' may occur only once",
                                    expression=f"{path}.link[{index}]"))
            seen.add(relation)
    return issues


def _full_url_disagreement(full_url: str, resource: dict[str, Any], path: str) -> list[Issue]:
    restful = RESTFUL.match(full_url) if full_url.startswith(("http://", "https://")) else None
    if restful is None or not load_spec().is_resource_type(restful.group("type")):
        return []  # a urn, or a URL that does not name a resource
    kind, resource_id = resource.get("resourceType"), resource.get("id")
    if restful.group("type") == kind and (not isinstance(resource_id, str) or restful.group("id") == resource_id):
        return []
    said = f"{kind}/{resource_id}" if isinstance(resource_id, str) else f"a {kind}"
    return [Issue("invalid", f"The fullUrl {full_url[:100]} does not agree with its resource, {str(said)[:100]}", expression=path)]


def coding_issues(coding: dict[str, Any], path: str) -> list[Issue]:
    system = coding.get("system")
    if isinstance(system, str) and not ABSOLUTE_URL.fullmatch(system):
        return [Issue("invalid", f"Coding.system must be an absolute URI, not {system[:60]!r}", expression=f"{path}.system")]
    return []


def search_parameter_issues(parameter: dict[str, Any], path: str) -> list[Issue]:
    if parameter.get("type") == "composite" and len(parameter.get("component") or []) < 2:
        return [Issue("invalid", "A composite SearchParameter defines two or more components", expression=f"{path}.component")]
    return []


RULES: dict[str, Callable[[dict[str, Any], str], list[Issue]]] = {
    "Attachment": attachment_issues,
    "Bundle": bundle_issues,
    "Coding": coding_issues,
    "SearchParameter": search_parameter_issues,
}

__all__ = ["RULES"]
