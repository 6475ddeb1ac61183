"""Index entries extracted at write time, one builder per search parameter type.

The stored document gets `ix` (entries the indexes cover) and `so` (one scalar sort key per
parameter). Layout of `ix`, each list covered by one multikey index led by `type`:

- `tk`: token keys `code␟system␟value` and `code␟␞␟value` (any system);
- `rf`: reference keys `code␟Type/id` (and `code␟url` for absolute or canonical ones);
- `sp`: folded prefixes `code␟l`, `code␟le`, ... up to PREFIX_LENGTH characters (starts-with
  searches find their candidates by equality), `st`: whole folded strings (contains, text),
  `sx`: exact strings;
- `ur`: uris `code␟uri`;
- `dt`: `{p, lo, hi}` instants, `nm`: `{p, lo, hi}` numbers, `qt`: `{p, s, c, v}` quantities.
"""

from __future__ import annotations

from typing import Any, Iterable

from fhir_server.search.parameters import Parameter
from fhir_server.values import EARLIEST, LATEST, date_range, fold, key

ANY_SYSTEM = "\x1e"
PREFIX_LENGTH = 10
STRING_PARTS = ("family", "given", "prefix", "suffix", "text", "line", "city", "district", "state", "postalCode", "country")


def tokens(value: Any) -> Iterable[tuple[str | None, str | None, str | None]]:
    """(system, code, text) of a Coding, CodeableConcept, Identifier, ContactPoint or primitive."""
    if isinstance(value, bool):
        yield None, "true" if value else "false", None
    elif isinstance(value, (str, int, float)):
        yield None, str(value), None
    elif isinstance(value, dict):
        if "coding" in value or ("text" in value and "value" not in value and "code" not in value):
            for coding in value.get("coding") or []:
                if isinstance(coding, dict):
                    yield coding.get("system"), coding.get("code"), coding.get("display")
            if isinstance(value.get("text"), str):
                yield None, None, value["text"]
        elif "code" in value:
            yield value.get("system"), value.get("code"), value.get("display")
        elif "value" in value:
            kind = value.get("type")
            text = kind.get("text") if isinstance(kind, dict) else None
            yield value.get("system"), value.get("value"), text


def identifier_types(value: Any) -> Iterable[tuple[str, str, str]]:
    """(type system, type code, value) of an Identifier with a coded type (for `:of-type`)."""
    if isinstance(value, dict) and isinstance(value.get("value"), str) and isinstance(value.get("type"), dict):
        for coding in value["type"].get("coding") or []:
            if isinstance(coding, dict) and coding.get("code"):
                yield coding.get("system") or "", coding["code"], value["value"]


def strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for part in STRING_PARTS:
            item = value.get(part)
            for text in item if isinstance(item, list) else [item]:
                if isinstance(text, str):
                    yield text


def references(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict) and isinstance(value.get("reference"), str):
        reference = value["reference"].split("/_history/")[0]
        yield reference
        parts = reference.rstrip("/").split("/")
        if "://" in reference and len(parts) >= 2:
            yield f"{parts[-2]}/{parts[-1]}"  # absolute URL: also findable as Type/id


def date_ranges(value: Any) -> Iterable[tuple[Any, Any]]:
    if isinstance(value, str):
        found = date_range(value)
        if found:
            yield found
    elif isinstance(value, dict):
        if "start" in value or "end" in value:  # Period
            start = date_range(value["start"]) if isinstance(value.get("start"), str) else None
            end = date_range(value["end"]) if isinstance(value.get("end"), str) else None
            yield (start[0] if start else EARLIEST), (end[1] if end else LATEST)
        for event in value.get("event") or []:  # Timing
            found = date_range(event) if isinstance(event, str) else None
            if found:
                yield found
        bounds = (value.get("repeat") or {}).get("boundsPeriod") if isinstance(value.get("repeat"), dict) else None
        if isinstance(bounds, dict):
            yield from date_ranges(bounds)


def numbers(value: Any) -> Iterable[float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        yield float(value)
    elif isinstance(value, dict) and isinstance(value.get("value"), (int, float)):
        yield float(value["value"])


def build_index(resource: dict[str, Any], parameters: dict[str, Parameter]) -> tuple[dict[str, list[Any]], dict[str, Any]]:
    """The `ix` entries and `so` sort keys of a resource."""
    ix: dict[str, list[Any]] = {"tk": [], "rf": [], "sp": [], "st": [], "sx": [], "ur": [], "dt": [], "nm": [], "qt": []}
    so: dict[str, Any] = {}
    for code, parameter in parameters.items():
        if parameter.extract is None:
            continue
        values = parameter.extract(resource)
        if values:
            _add(ix, so, code, parameter.type, values)
    return {name: entries for name, entries in ix.items() if entries}, so


def _add(ix: dict[str, list[Any]], so: dict[str, Any], code: str, kind: str, values: list[Any]) -> None:
    if kind == "token":
        for value in values:
            for kind_system, kind_code, identifier in identifier_types(value):
                ix["tk"].append(key(f"{code}:of-type", kind_system, kind_code, identifier))
            for system, token, text in tokens(value):
                if token:
                    ix["tk"].append(key(code, system or "", str(token)))
                    ix["tk"].append(key(code, ANY_SYSTEM, str(token)))
                    so.setdefault(code, str(token))
                if text:
                    ix["st"].append(key(f"{code}:text", fold(text)))
    elif kind == "reference":
        for value in values:
            for reference in references(value):
                ix["rf"].append(key(code, reference))
            if isinstance(value, dict) and isinstance(value.get("identifier"), dict):
                for system, token, _ in tokens(value["identifier"]):
                    if token:
                        ix["tk"].append(key(f"{code}:identifier", system or "", token))
                        ix["tk"].append(key(f"{code}:identifier", ANY_SYSTEM, token))
    elif kind == "string":
        prefixes: set[str] = set()
        for value in values:
            for text in strings(value):
                folded = fold(text)
                ix["st"].append(key(code, folded))
                ix["sx"].append(key(code, text))
                prefixes.update(folded[:n] for n in range(1, min(len(folded), PREFIX_LENGTH) + 1))
                so.setdefault(code, folded)
        ix["sp"].extend(key(code, prefix) for prefix in sorted(prefixes))
    elif kind == "uri":
        for value in values:
            if isinstance(value, str):
                ix["ur"].append(key(code, value))
    elif kind == "date":
        for value in values:
            for low, high in date_ranges(value):
                ix["dt"].append({"p": code, "lo": low, "hi": high})
                so.setdefault(code, low)
    elif kind == "number":
        for number in (n for value in values for n in numbers(value)):
            ix["nm"].append({"p": code, "lo": number, "hi": number})
            so.setdefault(code, number)
    elif kind == "quantity":
        for value in values:
            if isinstance(value, dict) and isinstance(value.get("value"), (int, float)):
                entry = {"p": code, "v": float(value["value"]), "s": value.get("system"), "c": value.get("code") or value.get("unit")}
                ix["qt"].append(entry)
                so.setdefault(code, entry["v"])


__all__ = ["ANY_SYSTEM", "PREFIX_LENGTH", "build_index"]
