"""Search parameters in, a filter plan out, written in storage/filters.py's vocabulary (which
spells it for MongoDB: search/ writes no operator).

Every value from the client ends up as a string or number compared by equality, one-of or
ranges, or inside an anchored, escaped prefix: never as an operator. Chains and `_has` run their
inner search first (bounded) and turn it into a list of keys.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable, Callable

from fhir_server.outcome import FhirError, Issue
from fhir_server.search.index import ANY_SYSTEM, PREFIX_LENGTH
from fhir_server.search.parameters import Parameter, Parameters
from fhir_server.storage import filters
from fhir_server.values import ONE_MS, SEPARATOR, before, below, date_range, fold, key, number_range

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
MAX_OR_VALUES = 100
MAX_CHAIN_DEPTH = 3
MAX_CHAIN_MATCHES = 1000
RESULT_PARAMETERS = frozenset({
    "_sort", "_count", "_total", "_summary", "_elements", "_include", "_revinclude", "_format", "_pretty",
    "_cursor", "_contained", "_containedType", "_type",
})
MODIFIERS = {
    "token": {"", "not", "text", "missing", "of-type", "in", "not-in"},
    "reference": {"", "missing", "identifier"},
    "string": {"", "exact", "contains", "missing"},
    "uri": {"", "below", "above", "missing"},
    "date": {"", "missing"},
    "number": {"", "missing"},
    "quantity": {"", "missing"},
}
ARRAY_FIELD = {"token": "ix.tk", "reference": "ix.rf", "string": "ix.st", "uri": "ix.ur"}
RANGE_FIELD = {"date": "ix.dt", "number": "ix.nm", "quantity": "ix.qt"}

# Runs an inner search for chains and _has: (type, params) -> matching stored documents.
InnerSearch = Callable[[str, list[tuple[str, str]], dict[str, Any]], Awaitable[list[dict[str, Any]]]]


# Array fields whose equality or one-of can find candidates through their index, most selective first.
DRIVING_FIELDS = ("_id", "ix.rf", "ix.tk", "ix.sx", "ix.ur", "ix.sp")


@dataclass
class Criteria:
    """The filter of one search, and what it ignored (lenient handling)."""

    clauses: list[dict[str, Any]] = field(default_factory=list)
    used: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    mask: dict[str, Any] | None = None  # the access policy's masking clause, when it is one of `clauses`

    def filter(self) -> dict[str, Any]:
        return filters.all_of(self.clauses)

    def driver(self) -> dict[str, Any] | None:
        """The clause that can find the candidates through an index: equality or one-of on one field."""
        for wanted in DRIVING_FIELDS:
            for clause in self.clauses:
                if len(clause) == 1 and wanted in clause and filters.equality_values(clause[wanted]) is not None:
                    return clause
        return None


def bad(diagnostics: str, code: str = "invalid") -> FhirError:
    return FhirError(400, Issue(code, diagnostics[:300]))


def split_values(value: str) -> list[str]:
    """Split on commas that are not escaped (`\\,`), keeping other escapes for later."""
    parts, current, escaped = [], "", False
    for char in value:
        if escaped:
            current += "\\" + char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ",":
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current + ("\\" if escaped else ""))
    return parts


def unescape(value: str) -> str:
    return re.sub(r"\\([\\,$|])", r"\1", value)


def split_pipe(value: str) -> tuple[str, str | None]:
    """`system|code` on the first unescaped `|` (None when there is none)."""
    match = re.search(r"(?<!\\)\|", value)
    if match is None:
        return unescape(value), None
    return unescape(value[: match.start()]), unescape(value[match.end() :])


# (system, code) pairs of a value set by canonical url; None when the server cannot enumerate it
ValueSetMembers = Callable[[str], "frozenset[tuple[str, str]] | None"]


def no_value_sets(url: str) -> None:
    return None


class QueryCompiler:
    """Compiles search parameters of one request for one resource type."""

    def __init__(self, parameters: Parameters, inner_search: InnerSearch, base_url: str, value_sets: ValueSetMembers = no_value_sets):
        self._parameters = parameters
        self._inner = inner_search
        self._base_url = base_url.rstrip("/")
        self._value_sets = value_sets

    async def compile(self, resource_type: str, params: list[tuple[str, str]], strict: bool, depth: int = 0) -> Criteria:
        criteria = Criteria(clauses=[{"type": resource_type}])
        for name, value in params:
            if name.partition(":")[0] in RESULT_PARAMETERS:
                continue
            try:
                clause = await self._clause(resource_type, name, value, depth)
            except _Unknown as unknown:
                if strict:
                    raise bad(str(unknown), "not-supported") from None
                criteria.ignored.append(str(unknown))
                continue
            criteria.clauses.append(clause)
            criteria.used.append((name, value))
        return criteria

    async def _clause(self, resource_type: str, name: str, value: str, depth: int) -> dict[str, Any]:
        if name.startswith("_has:"):
            return await self._has(resource_type, name, value, depth)
        head, dot, rest = name.partition(".")
        code, _, modifier = head.partition(":")
        parameter = self._parameters.for_type(resource_type).get(code)
        if parameter is None:
            raise _Unknown(f"Unknown search parameter '{code[:60]}' for {resource_type}")
        if dot:
            return await self._chain(parameter, modifier, rest, value, depth)
        if modifier not in MODIFIERS[parameter.type] and not (parameter.type == "reference" and modifier[:1].isupper()):
            raise _Unknown(f"Modifier ':{modifier[:30]}' is not supported on {code} ({parameter.type})")
        if modifier == "missing":
            return self._missing(parameter, value)
        values = split_values(value)
        if len(values) > MAX_OR_VALUES:
            raise bad(f"Too many values for {code}: at most {MAX_OR_VALUES}", "too-costly")
        if code == "_id":
            return filters.one_of("_id", [f"{resource_type}/{unescape(v)}" for v in values])
        if code == "_lastUpdated":
            return filters.any_of([_scalar_date("updated", v) for v in values])
        build = getattr(self, f"_{parameter.type}")
        return build(parameter, modifier, values)

    # -- one method per parameter type --------------------------------------------------------

    def _token(self, p: Parameter, modifier: str, values: list[str]) -> dict[str, Any]:
        if modifier == "text":
            return filters.any_of([filters.starts_with("ix.st", key(f"{p.code}:text", fold(unescape(v)))) for v in values])
        if modifier == "of-type":
            keys = []
            for value in values:
                parts = re.split(r"(?<!\\)\|", value)
                if len(parts) != 3 or not parts[1] or not parts[2]:
                    raise bad(f"{p.code}:of-type takes type-system|type-code|value")
                keys.append(key(f"{p.code}:of-type", *(unescape(part) for part in parts)))
            return filters.one_of("ix.tk", keys)
        if modifier in ("in", "not-in"):
            # a `code` element is indexed without a system: its value set's system is implied
            keys = [key(p.code, found, code) for url in values for system, code in self._members(p, unescape(url)) for found in (system, "")]
            return filters.one_of("ix.tk", keys) if modifier == "in" else filters.none_of("ix.tk", keys)
        keys, prefixes = [], []
        for value in values:
            system, code = split_pipe(value)
            if code is None:
                keys.append(key(p.code, ANY_SYSTEM, system))
            elif code == "":
                prefixes.append(key(p.code, system, ""))
            else:
                keys.append(key(p.code, system, code))
        if modifier == "not":
            if prefixes:
                raise bad(f"{p.code}:not needs system|code or code values")
            return filters.none_of("ix.tk", keys)
        clauses: list[dict[str, Any]] = [filters.starts_with("ix.tk", prefix) for prefix in prefixes]
        if keys:
            clauses.append(filters.one_of("ix.tk", keys))
        return filters.any_of(clauses)

    def _members(self, p: Parameter, url: str) -> frozenset[tuple[str, str]]:
        """The codes of a value set named by `:in` / `:not-in` (its canonical url)."""
        members = self._value_sets(url)
        if members is None:
            raise bad(f"{p.code}: value set {url[:200]} is not known here or cannot be enumerated", "not-supported")
        return members

    def _reference(self, p: Parameter, modifier: str, values: list[str]) -> dict[str, Any]:
        if modifier == "identifier":
            return self._token(Parameter(f"{p.code}:identifier", "token", None), "", values)
        keys = []
        for raw in values:
            value = unescape(raw)
            if value.startswith(self._base_url + "/"):
                value = value[len(self._base_url) + 1 :]
            value = value.split("/_history/")[0]
            if modifier:  # :Type
                keys.append(key(p.code, f"{modifier}/{value}"))
            elif "/" in value:
                keys.append(key(p.code, value))
            else:
                targets = p.targets or ()
                if not targets:
                    raise bad(f"{p.code} needs Type/id values")
                keys.extend(key(p.code, f"{target}/{value}") for target in targets)
        return filters.one_of("ix.rf", keys)

    def _string(self, p: Parameter, modifier: str, values: list[str]) -> dict[str, Any]:
        if modifier == "exact":
            return filters.one_of("ix.sx", [key(p.code, unescape(v)) for v in values])
        if modifier == "contains":
            return filters.any_of([filters.starts_with("ix.st", p.code + SEPARATOR, then=fold(unescape(v))) for v in values])
        folded = [fold(unescape(v)) for v in values]
        if all(folded) and all(len(f) <= PREFIX_LENGTH for f in folded):
            return filters.one_of("ix.sp", [key(p.code, f) for f in folded])  # equality on indexed prefixes
        return filters.any_of([filters.starts_with("ix.st", key(p.code, f)) for f in folded])

    def _uri(self, p: Parameter, modifier: str, values: list[str]) -> dict[str, Any]:
        if modifier == "below":
            return filters.any_of([filters.starts_with("ix.ur", key(p.code, unescape(v))) for v in values])
        if modifier == "above":
            keys: list[str] = []
            for value in map(unescape, values):
                parts = value.split("/")
                keys.extend(key(p.code, "/".join(parts[:n])) for n in range(3, len(parts) + 1))
            return filters.one_of("ix.ur", keys)
        return filters.one_of("ix.ur", [key(p.code, unescape(v)) for v in values])

    def _date(self, p: Parameter, modifier: str, values: list[str]) -> dict[str, Any]:
        return filters.any_of([filters.element_with("ix.dt", {"p": p.code, **_date_condition(v)}) for v in values])

    def _number(self, p: Parameter, modifier: str, values: list[str]) -> dict[str, Any]:
        return filters.any_of([filters.element_with("ix.nm", {"p": p.code, **_number_condition(v, "lo")}) for v in values])

    def _quantity(self, p: Parameter, modifier: str, values: list[str]) -> dict[str, Any]:
        clauses = []
        for value in values:
            number, _, unit = value.partition("|")
            condition = {"p": p.code, **_number_condition(number, "v")}
            if unit:
                system, code = split_pipe(unit)
                if code is None:
                    condition["c"] = system
                else:
                    condition["c"] = code
                    if system:
                        condition["s"] = system
            clauses.append(filters.element_with("ix.qt", condition))
        return filters.any_of(clauses)

    def _missing(self, p: Parameter, value: str) -> dict[str, Any]:
        if value not in ("true", "false"):
            raise bad(f"{p.code}:missing takes true or false")
        if p.code in ("_id", "_lastUpdated"):
            return filters.exists("_id", value == "false")
        if p.type in RANGE_FIELD:
            present: dict[str, Any] = {f"{RANGE_FIELD[p.type]}.p": p.code}
        else:
            present = filters.starts_with(ARRAY_FIELD[p.type], p.code + SEPARATOR)
        return present if value == "false" else filters.not_any([present])

    # -- chains and reverse chains --------------------------------------------------------------

    async def _chain(self, p: Parameter, modifier: str, rest: str, value: str, depth: int) -> dict[str, Any]:
        if p.type != "reference":
            raise bad(f"Only reference parameters can be chained ({p.code} is {p.type})")
        if depth + 1 >= MAX_CHAIN_DEPTH:
            raise bad(f"Chains are limited to {MAX_CHAIN_DEPTH} levels", "too-costly")
        targets = [modifier] if modifier else list(p.targets)
        if len(targets) != 1:
            raise bad(f"Chain on {p.code} must name the target type, e.g. {p.code}:Patient.{rest}")
        target = targets[0]
        matches = await self._inner(target, [(rest, value)], {"_id": 1})
        ids = [doc["_id"] for doc in matches]
        return filters.one_of("ix.rf", [key(p.code, ref) for ref in ids])

    async def _has(self, resource_type: str, name: str, value: str, depth: int) -> dict[str, Any]:
        parts = name.split(":", 3)
        if len(parts) != 4 or not all(parts[1:]):
            raise bad("_has must be _has:Type:reference-parameter:search-parameter")
        _, other_type, reference_code, rest = parts
        if depth + 1 >= MAX_CHAIN_DEPTH:
            raise bad(f"_has is limited to {MAX_CHAIN_DEPTH} levels", "too-costly")
        reference = self._parameters.for_type(other_type).get(reference_code)
        if reference is None or reference.type != "reference":
            raise _Unknown(f"_has: {other_type} has no reference parameter '{reference_code[:40]}'")
        matches = await self._inner(other_type, [(rest, value)], {"ix.rf": 1})
        prefix = key(reference_code, f"{resource_type}/")
        ids = {entry[len(prefix):] for doc in matches for entry in doc.get("ix", {}).get("rf", []) if entry.startswith(prefix)}
        return filters.one_of("_id", [f"{resource_type}/{i}" for i in sorted(ids)])


class _Unknown(Exception):
    """A parameter or modifier this server does not know (ignored when lenient)."""


def _prefix(value: str) -> tuple[str, str]:
    if len(value) > 2 and value[:2] in PREFIXES and (value[2].isdigit() or value[2] == "-"):
        return value[:2], value[2:]
    return "eq", value


Bound = tuple[str, str, Any]  # (field, operator, value), operators strict: gt / lt only


def _assemble(alternatives: list[list[Bound]], fields: dict[str, str]) -> dict[str, Any]:
    """OR of ANDs of bounds -> a filter, bounds on the same field merged."""

    def conjunction(bounds: list[Bound]) -> dict[str, Any]:
        merged: dict[str, list[tuple[str, Any]]] = {}
        for field_name, operator, value in bounds:
            merged.setdefault(fields[field_name], []).append((operator, value))
        return {name: filters.within(found) for name, found in merged.items()}

    return filters.any_of([conjunction(a) for a in alternatives])


def _date_bounds(value: str) -> list[list[Bound]]:
    """Bounds on a stored [lo, hi] for one prefixed date (ms precision: `>= t` is `> t - 1 ms`)."""
    prefix, text = _prefix(unescape(value))
    found = date_range(text)
    if found is None:
        raise bad(f"Not a date: {text[:40]!r} (use e.g. 2026-11-20 or ge2026-11-20T08:00:00Z)")
    low, high = found
    just_before, just_after = low - ONE_MS, high + ONE_MS
    if prefix == "ap":
        margin = max(timedelta(seconds=1), abs(datetime.now(timezone.utc) - low) / 10)
        return [[("lo", "lt", high + margin), ("hi", "gt", low - margin)]]
    return {
        "eq": [[("lo", "gt", just_before), ("hi", "lt", just_after)]],
        "ne": [[("lo", "lt", low)], [("hi", "gt", high)]],
        "gt": [[("hi", "gt", high)]],
        "lt": [[("lo", "lt", low)]],
        "ge": [[("hi", "gt", just_before)]],
        "le": [[("lo", "lt", just_after)]],
        "sa": [[("lo", "gt", high)]],
        "eb": [[("hi", "lt", low)]],
    }[prefix]


def _date_condition(value: str) -> dict[str, Any]:
    return _assemble(_date_bounds(value), {"lo": "lo", "hi": "hi"})


def _scalar_date(field_name: str, value: str) -> dict[str, Any]:
    """A date condition on a single stored instant (`_lastUpdated`): lo = hi = the instant."""
    return _assemble(_date_bounds(value), {"lo": field_name, "hi": field_name})


def _number_condition(value: str, value_field: str) -> dict[str, Any]:
    prefix, text = _prefix(unescape(value))
    found = number_range(text)
    if found is None:
        raise bad(f"Not a number: {text[:40]!r}")
    number, low, high = found
    margin = abs(number) / 10
    alternatives: list[list[Bound]] = {
        "eq": [[("v", "gt", before(low)), ("v", "lt", high)]],
        "ne": [[("v", "lt", low)], [("v", "gt", before(high))]],
        "gt": [[("v", "gt", number)]],
        "sa": [[("v", "gt", number)]],
        "lt": [[("v", "lt", number)]],
        "eb": [[("v", "lt", number)]],
        "ge": [[("v", "gt", before(number))]],
        "le": [[("v", "lt", below(number))]],
        "ap": [[("v", "gt", number - margin), ("v", "lt", number + margin)]],
    }[prefix]
    return _assemble(alternatives, {"v": value_field})


__all__ = ["Criteria", "InnerSearch", "MAX_CHAIN_MATCHES", "QueryCompiler", "RESULT_PARAMETERS", "bad", "split_values"]
