"""References inside the resources of a transaction Bundle: finding them, telling a
conditional one (`Patient?identifier=…`) from a placeholder (`urn:uuid:…`), and rewriting them
(and the placeholders in the narrative) once the plan knows every target."""

from __future__ import annotations

import copy
from typing import Any, Callable, Iterator

import orjson

PLACEHOLDERS = ("urn:uuid:", "urn:oid:")
STAND_IN = "stand-in"  # the id a reference's target has while validating before the lookups end


def copy_resource(resource: dict[str, Any]) -> dict[str, Any]:
    """A deep copy; through JSON bytes, five times faster than `copy.deepcopy` on resources."""
    try:
        return orjson.loads(orjson.dumps(resource))
    except orjson.JSONEncodeError:  # not JSON (a bug upstream): validation will say so
        return copy.deepcopy(resource)


def rewritten(resource: dict[str, Any], rewrite: Callable[[str], str], placeholders: dict[str, str]) -> dict[str, Any]:
    """A copy of the resource with every reference rewritten, and the placeholders in its narrative."""
    copied = copy_resource(resource)
    rewrite_references(copied, rewrite)
    text = copied.get("text")
    if isinstance(text, dict) and isinstance(text.get("div"), str) and "urn:" in text["div"]:
        for placeholder, target in placeholders.items():
            if placeholder.startswith(PLACEHOLDERS):
                text["div"] = text["div"].replace(placeholder, target)
    return copied


def with_stand_ins(
    resource: dict[str, Any], stand_ins: dict[str, str | None], in_narrative: dict[str, str]
) -> dict[str, Any] | None:
    """The resource as the plan will write it, but with `Type/stand-in` for each target it
    does not know yet (None when a target's type cannot be told); `in_narrative`: the known
    stand-ins, for placeholders in the narrative."""
    unknown = False

    def rewrite(reference: str) -> str:
        nonlocal unknown
        if reference in stand_ins:
            stand_in = stand_ins[reference]
            unknown = unknown or stand_in is None
            return stand_in or reference
        if is_conditional(reference):
            return f"{reference.partition('?')[0]}/{STAND_IN}"
        return reference  # an unknown placeholder: the final rewrite refuses it before validating

    result = rewritten(resource, rewrite, in_narrative)
    return None if unknown else result


def is_conditional(reference: str) -> bool:
    """`Type?criteria` (the criteria may hold urls: `Practitioner?identifier=https://rpps…|1`)."""
    head = reference.split("?", 1)[0]
    return "?" in reference and "://" not in head and not reference.startswith(("#", *PLACEHOLDERS))


def references_in(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for name, item in value.items():
            if name == "reference" and isinstance(item, str):
                yield item
            elif isinstance(item, (dict, list)):
                yield from references_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from references_in(item)


def rewrite_references(value: Any, rewrite: Any) -> None:
    if isinstance(value, dict):
        for name, item in value.items():
            if name == "reference" and isinstance(item, str):
                value[name] = rewrite(item)
            elif isinstance(item, (dict, list)):
                rewrite_references(item, rewrite)
    elif isinstance(value, list):
        for item in value:
            rewrite_references(item, rewrite)


__all__ = ["PLACEHOLDERS", "STAND_IN", "copy_resource", "is_conditional", "references_in", "rewrite_references", "rewritten",
           "with_stand_ins"]
