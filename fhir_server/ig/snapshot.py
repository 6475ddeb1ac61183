"""Snapshot generation: a profile's differential laid over its base R4 StructureDefinition.

Covers what our profiles use: tightened cardinality, types and target profiles, fixed and
pattern values, bindings, extra constraints, elements inside a data type (`CarePlan.period.start`)
and slices with their own children (`Patient.identifier:INS-NIR.system`, `Bundle.entry:X.resource`). Children of a data
type are copied from that type's definition, re-rooted under the element, as the HL7 snapshot
generator does.
"""

from __future__ import annotations

import copy
from typing import Any

# Differential keys that replace the base value; `constraint` is appended instead.
CONSTRAINT_KEY = "constraint"
IDENTITY_KEYS = ("id", "path")


class SnapshotError(ValueError):
    """The differential names an element its base does not have."""


def generate_snapshot(profile: dict[str, Any], definitions: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A copy of `profile` with a complete `snapshot`."""
    base = definitions.get(profile["type"])
    if base is None:
        raise SnapshotError(f"no base definition for {profile['type']}")
    elements: list[dict[str, Any]] = copy.deepcopy(base["snapshot"]["element"])
    for differential in choices_by_stem(profile.get("differential", {}).get("element", []), elements):
        index = _locate(elements, differential["id"], definitions)
        _merge(elements[index], differential, profile["url"])
    result = copy.deepcopy(profile)
    result["snapshot"] = {"element": elements}
    return result


def choices_by_stem(differential: list[dict[str, Any]], base: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The differential with a choice element named by its one type (`Observation.valueQuantity`,
    `Observation.component:SystolicBP.valueQuantity`, as R4's profiles write them) renamed to
    the choice (`value[x]`) narrowed to that type, its children re-rooted under it."""
    typed: dict[str, tuple[str, str]] = {}  # Observation.valueQuantity -> (value[x], Quantity)
    for element in base:
        if element["path"].endswith("[x]"):
            stem = element["path"][: -len("[x]")]
            for kind in element.get("type", []):
                typed[stem + kind["code"][:1].upper() + kind["code"][1:]] = (element["path"].rsplit(".", 1)[-1], kind["code"])
    renamed: list[dict[str, Any]] = []
    for element in differential:
        segments, path = element["id"].split("."), list[str]()
        narrowed_to = None
        for index, segment in enumerate(segments):
            name, colon, slice_name = segment.partition(":")
            choice = typed.get(".".join([*path, name]))
            if choice is not None:
                segments[index] = choice[0] + colon + slice_name
                name = choice[0]
                narrowed_to = choice[1] if index == len(segments) - 1 else None
            path.append(name)
        if narrowed_to is not None or ".".join(segments) != element["id"]:
            element = {**element, "id": ".".join(segments)}
            if narrowed_to is not None and "type" not in element:
                element["type"] = [{"code": narrowed_to}]
        renamed.append(element)
    return renamed


def _locate(elements: list[dict[str, Any]], element_id: str, definitions: dict[str, dict[str, Any]]) -> int:
    """Index of `element_id`, creating it (slice or data-type child) when the base lacks it."""
    for index, element in enumerate(elements):
        if element["id"] == element_id:
            return index
    parent_id, separator, last = _split_id(element_id)
    if separator == ":":
        return _add_slice(elements, parent_id, last, definitions)
    parent = _locate(elements, parent_id, definitions)
    _expand_type(elements, parent, definitions)
    for index, element in enumerate(elements):
        if element["id"] == element_id:
            return index
    raise SnapshotError(f"{element_id} is not an element of {elements[parent]['path']}")


def _split_id(element_id: str) -> tuple[str, str, str]:
    """`A.b:s.c` -> (`A.b:s`, `.`, `c`); `A.b:s` -> (`A.b`, `:`, `s`)."""
    dot, colon = element_id.rfind("."), element_id.rfind(":")
    cut = max(dot, colon)
    if cut < 0:
        raise SnapshotError(f"{element_id} has no parent element")
    return element_id[:cut], element_id[cut], element_id[cut + 1 :]


def _subtree_end(elements: list[dict[str, Any]], index: int) -> int:
    """Index just after the element at `index`, its children and its slices."""
    prefix = elements[index]["id"]
    end = index + 1
    while end < len(elements) and elements[end]["id"].startswith((prefix + ".", prefix + ":")):
        end += 1
    return end


def _add_slice(elements: list[dict[str, Any]], sliced_id: str, name: str, definitions: dict[str, dict[str, Any]]) -> int:
    """A new slice: a copy of the sliced element, placed after it and its earlier slices."""
    sliced = _locate(elements, sliced_id, definitions)
    slice_element = {
        key: copy.deepcopy(value)
        for key, value in elements[sliced].items()
        if key not in ("slicing", "sliceName")
    }
    slice_element["id"] = f"{sliced_id}:{name}"
    slice_element["sliceName"] = name
    # A backbone element's children (Bundle.entry.resource) belong to each slice too.
    end = _subtree_end(elements, sliced)
    children = []
    for child in elements[sliced + 1 : end]:
        rest = child["id"][len(sliced_id) :]
        if rest.startswith(".") and ":" not in rest:
            children.append({**copy.deepcopy(child), "id": slice_element["id"] + rest})
    elements[end:end] = [slice_element, *children]
    return end


def _expand_type(elements: list[dict[str, Any]], index: int, definitions: dict[str, dict[str, Any]]) -> None:
    """Insert the children of the element's single data type, re-rooted under it."""
    element = elements[index]
    if _subtree_end(elements, index) > index + 1 and not _only_slices_follow(elements, index):
        return  # already expanded (a backbone element, or done for an earlier differential)
    reference = element.get("contentReference")
    types = element.get("type", [])
    if isinstance(reference, str) and reference.startswith("#"):
        # the same content as another element of the base (Parameters.parameter.part is a parameter)
        type_name = reference[1:]
        root = type_name.split(".", 1)[0]
        if root not in definitions:
            raise SnapshotError(f"{element['id']} refers to {reference}, whose base is not known")
        type_elements = [e for e in definitions[root]["snapshot"]["element"] if e["path"] == type_name or e["path"].startswith(type_name + ".")]
    elif len(types) != 1 or types[0]["code"] not in definitions:
        raise SnapshotError(f"{element['id']} has no single complex type to constrain inside")
    else:
        type_elements = definitions[types[0]["code"]]["snapshot"]["element"]
        type_name = type_elements[0]["path"]
    children = []
    for child in type_elements[1:]:
        child = copy.deepcopy(child)
        suffix = child["path"][len(type_name) :]
        child["path"] = element["path"] + suffix
        child["id"] = element["id"] + child["id"][len(type_name) :]
        children.append(child)
    elements[index + 1 : index + 1] = children


def _only_slices_follow(elements: list[dict[str, Any]], index: int) -> bool:
    """True when the element's subtree holds slices but none of its own children yet."""
    prefix = elements[index]["id"]
    return not any(e["id"].startswith(prefix + ".") for e in elements[index + 1 : _subtree_end(elements, index)])


def _merge(element: dict[str, Any], differential: dict[str, Any], source: str) -> None:
    """Apply one differential element onto its snapshot element."""
    for key, value in differential.items():
        if key in IDENTITY_KEYS:
            continue
        if key == CONSTRAINT_KEY:
            added = [{**c, "source": c.get("source", source)} for c in value]
            element[CONSTRAINT_KEY] = element.get(CONSTRAINT_KEY, []) + added
        else:
            element[key] = copy.deepcopy(value)


__all__ = ["SnapshotError", "choices_by_stem", "generate_snapshot"]
