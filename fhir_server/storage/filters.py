"""The filter vocabulary search plans are written in, and its MongoDB spelling.

search/ compiles FHIR criteria into plans built only from these functions (a field equal to one
of some values, none of them, a prefix, bounds inside an array element, present or absent,
and / or / nor, rows after a keyset position); they return MongoDB filters, which only storage
code (the store, matching.py) reads. search/ never writes an operator itself, so another
backend would re-spell this module and leave the search alone.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Sequence

Filter = dict[str, Any]
COMBINERS = ("$and", "$or", "$nor")
STRICT = {"gt": "$gt", "lt": "$lt"}  # bounds are strict: `>= t` is written `> t - 1 ms` by the caller


def equal(field: str, value: Any) -> Filter:
    return {field: value}


def one_of(field: str, values: Iterable[Any]) -> Filter:
    """The field (or, for an array, one of its elements) equals one of the values."""
    return {field: {"$in": list(values)}}


def none_of(field: str, values: Iterable[Any]) -> Filter:
    return {field: {"$nin": list(values)}}


def starts_with(field: str, prefix: str, then: str | None = None) -> Filter:
    """A string (or an array element) beginning with `prefix` (and holding `then` later on)."""
    pattern = "^" + re.escape(prefix) + ("" if then is None else ".*" + re.escape(then))
    return {field: {"$regex": pattern}}


def exists(field: str, present: bool = True) -> Filter:
    return {field: {"$exists": present}}


def element_with(field: str, condition: Filter) -> Filter:
    """An array element matching all of `condition` at once (bounds on one indexed value)."""
    return {field: {"$elemMatch": condition}}


def within(bounds: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    """A field's condition from strict bounds: [("gt", low), ("lt", high)]."""
    return {STRICT[operator]: value for operator, value in bounds}


def all_of(filters: Sequence[Filter]) -> Filter:
    filters = [f for f in filters if f]
    return {} if not filters else filters[0] if len(filters) == 1 else {"$and": list(filters)}


def any_of(filters: Sequence[Filter]) -> Filter:
    return filters[0] if len(filters) == 1 else {"$or": list(filters)}


def not_any(filters: Sequence[Filter]) -> Filter:
    return {"$nor": list(filters)}


NOTHING_AFTER: Filter = {"_id": {"$exists": False}}


def after_position(sort: Sequence[tuple[str, int]], values: Sequence[Any]) -> Filter:
    """Rows strictly after a keyset position in (sort keys, _id) order; missing keys sort lowest."""
    alternatives = []
    for index, (name, direction) in enumerate(sort):
        equal_before = [{sort[j][0]: values[j]} for j in range(index)]
        value = values[index]
        if direction == 1:
            strict: Filter | None = {name: {"$ne": None}} if value is None else {name: {"$gt": value}}
        else:
            strict = None if value is None else {"$or": [{name: {"$lt": value}}, {name: None}]}
        if strict is not None:
            alternatives.append({"$and": [*equal_before, strict]} if equal_before else strict)
    return {"$or": alternatives} if alternatives else NOTHING_AFTER


# -- reading plans back (the executor chooses how to run them) -----------------------------------


def equality_values(condition: Any) -> list[Any] | None:
    """The values a field's condition accepts when it is an equality or one-of (else None)."""
    if isinstance(condition, str):
        return [condition]
    if isinstance(condition, dict) and list(condition) == ["$in"]:
        return list(condition["$in"])
    return None


def fields_read(filters: Iterable[Filter]) -> set[str]:
    """The document fields a list of filters reads."""
    found: set[str] = set()
    for clause in filters:
        for name, condition in clause.items():
            if name in COMBINERS:
                found |= fields_read(condition)
            elif not name.startswith("$"):
                found.add(name)
    return found


__all__ = ["Filter", "after_position", "all_of", "any_of", "element_with", "equal", "equality_values", "exists", "fields_read",
           "none_of", "not_any", "one_of", "starts_with", "within"]
