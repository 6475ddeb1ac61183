"""A `$export` kick-off read into what to export: the query string of a GET, or the Parameters of
a POST, checked against what calipso supports (export.json).

Nothing is ignored silently (peers have exported more health data than asked by accepting a
`_typeFilter` they never applied): a parameter calipso does not support, a type it does not
know, an element no exported type has, is a 400; under `Prefer: handling=lenient` it is
dropped and said in the manifest's `error[]` instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from importlib.resources import files
from typing import Any, Callable
from urllib.parse import parse_qsl

import orjson

from fhir_server.outcome import FhirError, Issue
from fhir_server.values import instant

EXPORT = orjson.loads(files("fhir_server.bulk").joinpath("export.json").read_bytes())
OUTPUT_FORMATS = frozenset(EXPORT["outputFormats"])
RESULT_PARAMETERS = frozenset(EXPORT["resultParameters"])
LEVELS = ("system", "patient", "group")
# `_typeFilter` values may be comma-joined (clients condense repeated parameters): a comma
# starts a new filter only where a resource type and `?` follow
TYPE_FILTER_START = re.compile(r",(?=[A-Z][A-Za-z]+\?)")
VALUE_KEYS = ("valueString", "valueInstant", "valueDateTime", "valueCode", "valueUri", "valueCanonical", "valueBoolean")


@dataclass(frozen=True)
class ExportRequest:
    """What a client asked to export (types None: every type it may read)."""

    level: str
    types: tuple[str, ...] | None = None
    since: datetime | None = None
    until: datetime | None = None
    type_filters: dict[str, tuple[str, ...]] = field(default_factory=dict)  # type -> search query strings
    elements: tuple[str, ...] = ()  # "element" (every type) or "Type.element"
    patients: tuple[str, ...] | None = None  # the `patient` parameter: patient ids
    not_honoured: tuple[str, ...] = ()  # lenient handling: what was dropped, for error[]
    lenient: bool = False  # Prefer: handling=lenient


def invalid(text: str, code: str = "invalid") -> FhirError:
    return FhirError(400, Issue(code, text))


def parameters_of(body: Any) -> list[tuple[str, str]]:
    """A POST kick-off's Parameters resource as (name, value) pairs."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise invalid("A POST $export takes a Parameters resource")
    pairs = []
    for parameter in body.get("parameter") or []:
        name = parameter.get("name") if isinstance(parameter, dict) else None
        if not isinstance(name, str):
            raise invalid("Each Parameters.parameter needs a name")
        reference = parameter.get("valueReference")
        value = reference.get("reference") if isinstance(reference, dict) else next(
            (parameter[k] for k in VALUE_KEYS if k in parameter), None)
        if not isinstance(value, (str, bool)):
            raise invalid(f"Parameter {name[:40]} has no value calipso reads (valueString, valueInstant, valueReference, ...)")
        pairs.append((name, str(value).lower() if isinstance(value, bool) else value))
    return pairs


class _Reader:
    def __init__(self, level: str, known_type: Callable[[str], bool], elements_of: Callable[[str], set[str]], lenient: bool):
        self.level = level
        self.known_type = known_type
        self.elements_of = elements_of
        self.lenient = lenient
        self.dropped: list[str] = []

    def refuse(self, text: str, code: str = "not-supported") -> None:
        """400, or (lenient) a note for error[]."""
        if not self.lenient:
            raise invalid(text, code)
        self.dropped.append(text)


def read_export(pairs: list[tuple[str, str]], level: str, known_type: Callable[[str], bool],
                elements_of: Callable[[str], set[str]], lenient: bool = False) -> ExportRequest:
    """The export a kick-off's parameters ask for (`elements_of(type)`: its top-level elements)."""
    reader = _Reader(level, known_type, elements_of, lenient)
    given: dict[str, list[str]] = {}
    for name, value in pairs:
        allowed = EXPORT["parameters"].get(name)
        if allowed is None:
            reader.refuse(f"$export does not support the parameter {name[:60]}")
        elif level not in allowed:
            reader.refuse(f"{name} is not a parameter of {level}-level $export")
        else:
            given.setdefault(name, []).append(value)
    for value in given.get("_outputFormat", []):
        if value not in OUTPUT_FORMATS:
            raise invalid(f"_outputFormat {value[:60]} is not supported: calipso writes application/fhir+ndjson")
    types = _types(reader, given.get("_type"))
    return ExportRequest(
        level=level,
        types=types,
        since=_instant(given, "_since"),
        until=_instant(given, "_until"),
        type_filters=_type_filters(reader, given.get("_typeFilter", []), types),
        elements=_elements(reader, given.get("_elements", []), types),
        patients=_patients(given.get("patient")),
        not_honoured=tuple(reader.dropped),
        lenient=lenient,
    )


def _types(reader: _Reader, values: list[str] | None) -> tuple[str, ...] | None:
    if values is None:
        return None
    found: list[str] = []
    for name in (t.strip() for value in values for t in value.split(",")):
        if not name:
            continue
        if not reader.known_type(name):
            reader.refuse(f"_type names {name[:60]}, which is not an R4 resource type", "not-found")
        elif name not in found:
            found.append(name)
    if not found:
        raise invalid("_type names no resource type calipso can export")
    return tuple(found)


def _instant(given: dict[str, list[str]], name: str) -> datetime | None:
    values = given.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise invalid(f"{name} is given more than once")
    moment = instant(values[0])
    if moment is None:
        raise invalid(f"{name} must be an instant such as 2026-01-31T08:00:00Z")
    return moment


def _type_filters(reader: _Reader, values: list[str], types: tuple[str, ...] | None) -> dict[str, tuple[str, ...]]:
    found: dict[str, list[str]] = {}
    for text in (t.strip() for value in values for t in TYPE_FILTER_START.split(value)):
        resource_type, mark, query = text.partition("?")
        if not mark or not reader.known_type(resource_type):
            raise invalid(f"_typeFilter {text[:80]} is not Type?search-parameters")
        if types is not None and resource_type not in types:
            raise invalid(f"_typeFilter {text[:80]} filters {resource_type}, which _type does not ask for")
        names = {name for name, _ in parse_qsl(query, keep_blank_values=True)}
        if not names:
            raise invalid(f"_typeFilter {text[:80]} has no search parameter")
        result = sorted(name for name in names if name.split(":")[0] in RESULT_PARAMETERS)
        if result:
            raise invalid(f"_typeFilter {text[:80]} uses {', '.join(result)}: only search criteria filter an export")
        found.setdefault(resource_type, []).append(query)
    return {t: tuple(queries) for t, queries in found.items()}


def _elements(reader: _Reader, values: list[str], types: tuple[str, ...] | None) -> tuple[str, ...]:
    found: list[str] = []
    for item in (e.strip() for value in values for e in value.split(",")):
        if not item:
            continue
        resource_type, dot, element = item.rpartition(".")
        if dot and (not reader.known_type(resource_type) or element not in reader.elements_of(resource_type)):
            reader.refuse(f"_elements names {item[:80]}, which is not a top-level element of an R4 resource", "not-found")
            continue
        if not dot and not any(element in reader.elements_of(t) for t in types or ()) and types is not None:
            reader.refuse(f"_elements names {item[:80]}, which none of the exported types has", "not-found")
            continue
        found.append(item)
    return tuple(found)


def _patients(values: list[str] | None) -> tuple[str, ...] | None:
    if values is None:
        return None
    found: list[str] = []
    for reference in (r.strip() for value in values for r in value.split(",")):
        kind, _, ident = reference.partition("/")
        if kind != "Patient" or not ident or "/" in ident:
            raise invalid(f"patient takes references to patients (Patient/id), not {reference[:60]}")
        if ident not in found:
            found.append(ident)
    return tuple(found)


def elements_for(elements: tuple[str, ...], resource_type: str) -> list[str] | None:
    """The `_elements` that apply to one type (None: the whole resource)."""
    kept = [e.rpartition(".")[2] for e in elements if "." not in e or e.rpartition(".")[0] == resource_type]
    return kept or None


__all__ = ["EXPORT", "ExportRequest", "LEVELS", "elements_for", "invalid", "parameters_of", "read_export"]
