"""`_summary` and `_elements`: fewer elements per resource, marked SUBSETTED as R4 asks."""

from __future__ import annotations

from typing import Any

import orjson

from fhir_server.spec import Spec

SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}
ALWAYS = ("resourceType", "id", "meta")


def subset(raw: bytes, spec: Spec, summary: str | None, elements: list[str] | None) -> bytes:
    """The stored bytes, or a subset of them when _summary / _elements ask for one."""
    if (summary in (None, "false") and not elements) or summary == "count":
        return raw
    resource: dict[str, Any] = orjson.loads(raw)
    members = spec.structures.get(resource.get("resourceType", ""), {})
    if summary == "data":
        kept = {k: v for k, v in resource.items() if k != "text"}
    elif summary == "text":
        required = {name for name, info in members.items() if info.get("min", 0) > 0}
        kept = {k: v for k, v in resource.items() if k in ALWAYS or k == "text" or k in required}
    elif summary == "true":
        kept = {k: v for k, v in resource.items() if k in ALWAYS or members.get(k, {}).get("summary")}
    else:
        wanted = set(elements or ())
        kept = {k: v for k, v in resource.items() if k in ALWAYS or k in wanted or (k.startswith("_") and k[1:] in wanted)}
    meta = dict(kept.get("meta") or {})
    meta["tag"] = [*meta.get("tag", []), SUBSETTED]
    kept["meta"] = meta
    return orjson.dumps(kept)


__all__ = ["subset"]
