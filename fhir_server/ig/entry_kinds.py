"""The notebook entry kinds of our guide (CodeSystem entry-kind), with their French display and
the ANS note type each maps to (ConceptMap entry-kind-to-note-type): read by the web app and
by the CdL view."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import orjson

from fhir_server.ig import PROFILES_DIR


@cache
def entry_kinds(profiles: Path = PROFILES_DIR) -> list[dict[str, Any]]:
    """The notebook entry kinds of the guide, with their French display and ANS note type (the
    guide's ConceptMap); `ack` is a read receipt, not a kind a user writes."""
    system = orjson.loads((profiles / "CodeSystem-entry-kind.json").read_bytes())
    concept_map = orjson.loads((profiles / "ConceptMap-entry-kind-to-note-type.json").read_bytes())
    note_types = {element["code"]: (group["target"], element["target"][0]["code"])
                  for group in concept_map["group"] for element in group["element"] if element.get("target")}
    kinds = []
    for concept in system["concept"]:
        code = concept["code"]
        kind: dict[str, Any] = {"system": system["url"], "code": code, "display": concept.get("display", code),
                                "receipt": code == "ack"}
        if code in note_types:
            kind["noteType"] = {"system": note_types[code][0], "code": note_types[code][1]}
        kinds.append(kind)
    return kinds


__all__ = ["entry_kinds"]
