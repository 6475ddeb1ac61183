"""Evaluate, in Python, the MongoDB filter subset that search/query.py emits.

Used on the bounded candidate set of a search (ids found through one indexed clause), so
that the rest of the criteria, the sort and the keyset cut never depend on the database's
planner: SecantusDB scans the whole collection for `$and`, `$or`, `$nor` and hinted
multikey indexes. Supported: equality, `$in`, `$nin`, `$ne`, `$gt`, `$lt`, `$exists`,
`$regex` (strings), `$elemMatch`, `$or`, `$nor`, `$and`, dotted fields, arrays as MongoDB
matches them (any element).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

MISSING = object()


def _values(doc: Any, dotted: str) -> list[Any]:
    """Every value a dotted path reaches, arrays flattened one level as MongoDB does."""
    current: list[Any] = [doc]
    for part in dotted.split("."):
        following: list[Any] = []
        for item in current:
            if isinstance(item, dict) and part in item:
                value = item[part]
                following.extend(value if isinstance(value, list) else [value])
            elif isinstance(item, list):
                for element in item:
                    if isinstance(element, dict) and part in element:
                        value = element[part]
                        following.extend(value if isinstance(value, list) else [value])
        current = following
    return current


@lru_cache(maxsize=4096)
def _pattern(text: str) -> re.Pattern[str]:
    return re.compile(text)


def _comparable(a: Any, b: Any) -> bool:
    numbers = (int, float)
    return (isinstance(a, numbers) and isinstance(b, numbers)) or type(a) is type(b)


def _operator(values: list[Any], operator: str, argument: Any) -> bool:
    if operator == "$in":
        return any(v in argument for v in values) or (None in argument and not values)
    if operator == "$nin":
        return not _operator(values, "$in", argument)
    if operator == "$ne":
        return not _equals(values, argument)
    if operator == "$gt":
        return any(v is not None and _comparable(v, argument) and v > argument for v in values)
    if operator == "$lt":
        return any(v is not None and _comparable(v, argument) and v < argument for v in values)
    if operator == "$exists":
        return bool(values) == bool(argument)
    if operator == "$regex":
        pattern = _pattern(argument)
        return any(isinstance(v, str) and pattern.search(v) for v in values)
    raise ValueError(f"unsupported operator {operator}")


def _equals(values: list[Any], expected: Any) -> bool:
    if expected is None:
        return not values or any(v is None for v in values)
    return any(v == expected and _comparable(v, expected) for v in values)


def _field(doc: dict[str, Any], name: str, condition: Any) -> bool:
    if isinstance(condition, dict) and condition and all(k.startswith("$") for k in condition):
        if "$elemMatch" in condition:
            elements = [e for e in _raw_array(doc, name) if isinstance(e, dict)]
            return any(matches(e, condition["$elemMatch"]) for e in elements)
        values = _values(doc, name)
        return all(_operator(values, op, arg) for op, arg in condition.items())
    return _equals(_values(doc, name), condition)


def _raw_array(doc: dict[str, Any], dotted: str) -> list[Any]:
    value: Any = doc
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value if isinstance(value, list) else []


def matches(doc: dict[str, Any], query: dict[str, Any]) -> bool:
    """True when `doc` satisfies `query` (the subset above)."""
    for name, condition in query.items():
        if name == "$and":
            if not all(matches(doc, c) for c in condition):
                return False
        elif name == "$or":
            if not any(matches(doc, c) for c in condition):
                return False
        elif name == "$nor":
            if any(matches(doc, c) for c in condition):
                return False
        elif not _field(doc, name, condition):
            return False
    return True


__all__ = ["matches"]
