"""Keyset paging positions: the opaque cursor of a page (its last row's sort values and `_id`),
and the order of two positions as the database sorts them (missing values lowest). The rows
strictly after a position, as a condition: storage/filters.py `after_position`."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime, timezone
from typing import Any

import orjson

from fhir_server.search.query import bad

def _encode(value: Any) -> Any:
    return {"d": round(value.timestamp() * 1000)} if isinstance(value, datetime) else value


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"d"}:
        return datetime.fromtimestamp(value["d"] / 1000, tz=timezone.utc)
    return value


def field_value(doc: dict[str, Any], dotted: str) -> Any:
    value: Any = doc
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def encode_cursor(doc: dict[str, Any], sort: list[tuple[str, int]], before: bool = False) -> str:
    """A position: strictly after `doc` in the sort order (or strictly before it)."""
    values = [_encode(field_value(doc, name)) for name, _ in sort]
    payload = orjson.dumps({"b": values} if before else values)
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


def decode_cursor(cursor: str, sort: list[tuple[str, int]]) -> tuple[list[Any], bool]:
    """(the sort values of the position, True when the page is the one before it)."""
    try:
        decoded = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        before = isinstance(decoded, dict)
        values = decoded.get("b") if before else decoded
        if not isinstance(values, list) or len(values) != len(sort):
            raise ValueError("shape")
        return [_decode(v) for v in values], before
    except (ValueError, TypeError, AttributeError, binascii.Error, orjson.JSONDecodeError, OverflowError, OSError):
        raise bad("The paging cursor is not valid for this search (change no parameter while paging)") from None


def compare_positions(left: list[Any], right: list[Any], sort: list[tuple[str, int]]) -> int:
    """Order of two rows' sort values as MongoDB sorts them (missing lowest)."""
    for a, b, (_, direction) in zip(left, right, sort):
        if a == b:
            continue
        if a is None or b is None:
            order = -1 if a is None else 1
        else:
            try:
                order = -1 if a < b else 1
            except TypeError:
                order = -1 if type(a).__name__ < type(b).__name__ else 1
        return order * direction
    return 0


__all__ = ["compare_positions", "decode_cursor", "encode_cursor", "field_value"]
