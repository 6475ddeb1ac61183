"""The mapping engine: `mappings/*.yaml` (data) turn an ADT message into a FHIR transaction Bundle.

A mapping file names the events it handles, the segments they require, the fields that
must be HL7 dates, named values (`let`), and the resources to write: each a FHIR JSON
template plus the Bundle request (conditional create/update/patch, so a replay is
idempotent). `mappings/schema.json` validates every file at load.

Template strings hold `{expression}` placeholders:
- an HL7 path `PID-3[5=PI].4.2` (repetition chosen by index `[2]` or by a component value
  `[5=PI]`), `~.2` (component of the repetition being iterated), `$name` (a `let` value),
  `@name` (the `urn:uuid` of another resource of the Bundle), `'text'` (a literal);
- alternatives `a ?? b` (the first that is not empty);
- transforms after `|`: `dtm` (HL7 DTM -> FHIR dateTime), `date`, `ddmmyyyy`, `hhmm`, `oid`
  (-> `urn:oid:`), `upper`, `lower`, `title`, `map:ID` / `map?:ID` (through
  `mappings/conceptmaps/ID.json`; `?` = an unmapped code gives nothing instead of an error).
A string whose placeholders are all empty is left out, and so is any object or list that
ends up empty. `$each` (a segment name or a field) with `$item` repeats a template;
`$if` keeps an object only when its expression is not empty; `$join` builds one string
from repeated parts.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, Callable

from datetime import datetime
from zoneinfo import ZoneInfo

import jsonschema
import yaml

from fhir_server.data_folders import source_or_installed
from hl7v2_bridge.er7 import Message, Segment, leaf

OPTIONAL = "optional"  # marks an entry the bridge drops when its conditional target does not exist
MERGE = "merge"  # names a list the bridge merges with the stored resource's instead of replacing it
MAPPINGS_DIR = source_or_installed(Path(__file__).resolve().parents[1] / "mappings", "hl7v2_bridge.mappings")
PLACEHOLDER = re.compile(r"\{([^{}]+)\}")
FIELD = re.compile(r"^(?P<segment>[A-Z][A-Z0-9]{2})-(?P<field>\d+)(?:\[(?P<select>[^\]]+)\])?(?:\.(?P<component>\d+))?(?:\.(?P<sub>\d+))?$")
CURRENT = re.compile(r"^~(?:\.(?P<component>\d+))?(?:\.(?P<sub>\d+))?$")
LOCAL_TIME = ZoneInfo("Europe/Paris")
DTM = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\.\d{1,4})?([+-]\d{4})?$")


class MappingError(ValueError):
    """The message cannot be mapped: HL7 table 0357 code, text, location (for ERR)."""

    def __init__(self, code: str, text: str, location: str = ""):
        super().__init__(text)
        self.code, self.text, self.location = code, text, location


@dataclass
class Context:
    """What placeholders see: the message, the `let` values, the Bundle's resource names."""

    message: Message
    values: dict[str, str] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)  # resource name -> urn:uuid
    segments: dict[str, Segment] = field(default_factory=dict)  # the segment being iterated
    repetition: str | None = None  # the field repetition being iterated
    tables: "ConceptMaps | None" = None

    def inside(self, **changes: Any) -> "Context":
        return Context(
            self.message, self.values, self.names,
            changes.get("segments", self.segments), changes.get("repetition", self.repetition), self.tables,
        )


class ConceptMaps:
    """Code tables as FHIR ConceptMaps (`mappings/conceptmaps/*.json`), by id."""

    def __init__(self, folder: Path):
        self._tables: dict[str, dict[str, str]] = {}
        for path in sorted(folder.glob("*.json")):
            concept_map = json.loads(path.read_text(encoding="utf-8"))
            table: dict[str, str] = {}
            for group in concept_map.get("group", []):
                for element in group.get("element", []):
                    targets = element.get("target", [])
                    if targets and targets[0].get("code"):
                        table[element["code"]] = targets[0]["code"]
            self._tables[concept_map["id"]] = table

    def translate(self, table: str, code: str, strict: bool) -> str:
        mapped = self._tables.get(table, {}).get(code)
        if mapped is None and strict:
            raise MappingError("103", f"Code '{code[:40]}' is not in table {table}")
        return mapped or ""


@dataclass(frozen=True)
class Mapping:
    """One mapping file."""

    name: str
    events: tuple[str, ...]
    requires: tuple[str, ...]
    dates: tuple[str, ...]
    conditions: tuple[dict[str, str], ...]
    let: dict[str, str]
    resources: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class Mappings:
    """Every mapping file, by trigger event."""

    by_event: dict[str, Mapping]
    tables: ConceptMaps

    def for_event(self, event: str) -> Mapping | None:
        return self.by_event.get(event)


@cache
def load_mappings(folder: Path = MAPPINGS_DIR) -> Mappings:
    """Read and schema-check every `*.yaml` (shared parts come from `parts/` by `include`)."""
    schema = json.loads((folder / "schema.json").read_text(encoding="utf-8"))
    by_event: dict[str, Mapping] = {}
    for path in sorted(folder.glob("*.yaml")):
        document = _with_parts(yaml.safe_load(path.read_text(encoding="utf-8")), folder)
        try:
            jsonschema.validate(document, schema)
        except jsonschema.ValidationError as error:
            raise ValueError(f"{path.name}: {error.message} at {'/'.join(map(str, error.absolute_path))}") from None
        mapping = Mapping(
            name=path.stem,
            events=tuple(document["events"]),
            requires=tuple(document.get("requires", [])),
            dates=tuple(document.get("dates", [])),
            conditions=tuple(document.get("conditions", [])),
            let=dict(document.get("let", {})),
            resources=tuple(document["resources"]),
        )
        for event in mapping.events:
            if event in by_event:
                raise ValueError(f"{path.name}: event {event} is already mapped by {by_event[event].name}")
            by_event[event] = mapping
    return Mappings(by_event, ConceptMaps(folder / "conceptmaps"))


def _with_parts(document: dict[str, Any], folder: Path) -> dict[str, Any]:
    """`include: [patient]`: the `let` and `resources` of `parts/patient.yaml` come first."""
    lets: dict[str, str] = {}
    resources: list[dict[str, Any]] = []
    for part in document.get("include", []):
        included = yaml.safe_load((folder / "parts" / f"{part}.yaml").read_text(encoding="utf-8"))
        lets.update(included.get("let", {}))
        resources.extend(included.get("resources", []))
    lets.update(document.get("let", {}))
    return {**document, "let": lets, "resources": resources + document.get("resources", [])}


def to_bundle(message: Message, mapping: Mapping, tables: ConceptMaps) -> dict[str, Any]:
    """The transaction Bundle for one message; MappingError when the message cannot be mapped."""
    for segment in mapping.requires:
        if message.first(segment) is None:
            raise MappingError("100", f"A {'/'.join(mapping.events)} needs a {segment} segment", segment)
    for path in mapping.dates:
        value = _field_value(path, Context(message))
        if value and DTM.match(value) is None:
            raise MappingError("102", f"{path} is not an HL7 date/time (DTM): '{value[:30]}'", path)
    context = Context(message, tables=tables)
    context.names = {r["name"]: f"urn:uuid:{uuid.uuid4()}" for r in mapping.resources}
    for name, expression in mapping.let.items():
        context.values[name] = render_string(expression, context) or ""
    for condition in mapping.conditions:
        if not render_string(condition["when"], context):
            raise MappingError(condition["code"], condition["text"], condition.get("location", ""))
    entries: list[dict[str, Any]] = []
    seen: set[tuple[str, ...]] = set()
    for spec in mapping.resources:
        for scope in _scopes(spec, context):
            entry = _entry(spec, scope)
            if entry is None:
                continue
            request = entry["request"]
            identity = (request["method"], request["url"], request.get("ifNoneExist", ""))
            if identity not in seen:  # the same GP in PD1-4 and PV1-8: one entry
                seen.add(identity)
                entries.append(entry)
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _scopes(spec: dict[str, Any], context: Context) -> list[Context]:
    """One context per entry to write: each repeated segment, pointed at `field` if given."""
    scopes = _iterate(spec["each"], context) if "each" in spec else [context]
    if "field" not in spec:
        return scopes
    focused = []
    for scope in scopes:
        match = FIELD.match(spec["field"])
        assert match is not None
        segment = scope.segments.get(match["segment"]) or scope.message.first(match["segment"])
        repetitions = segment.repetitions(int(match["field"])) if segment else []
        focused.append(scope.inside(repetition=repetitions[0] if repetitions else ""))
    return focused


def _entry(spec: dict[str, Any], context: Context) -> dict[str, Any] | None:
    if "when" in spec and not render_string(spec["when"], context):
        return None
    resource = render(spec["resource"], context)
    if not isinstance(resource, dict):
        return None
    request: dict[str, str] = {}
    for key, template in spec["request"].items():
        value = render_string(template, context)
        if not value:
            raise MappingError("101", f"The {spec['name']} cannot be identified: a field of '{template[:80]}' is empty", spec["name"])
        request[key] = value
    for element, path in spec.get("deleteWhenNull", {}).items():
        if _raw_field(path, context) == '""':
            resource[element] = None  # HL7 "" (null): delete the element
    resource = {"resourceType": spec["type"], **resource}
    if request["method"] == "PATCH":
        resource = _json_patch(resource)
    # one fullUrl per entry: a repeated resource (`each`) gets its own, not its name's
    full_url = f"urn:uuid:{uuid.uuid4()}" if "each" in spec else context.names[spec["name"]]
    entry = {"fullUrl": full_url, "resource": resource, "request": request}
    if spec.get("optional"):
        entry[OPTIONAL] = True
    if spec.get("merge"):
        entry[MERGE] = spec["merge"]
    return entry


def _raw_field(path: str, context: Context) -> str:
    match = FIELD.match(path)
    if match is None:
        return ""
    segment = context.segments.get(match["segment"]) or context.message.first(match["segment"])
    return segment.raw(int(match["field"])) if segment else ""


def _json_patch(resource: dict[str, Any]) -> dict[str, Any]:
    """A PATCH template names the elements the message sets; each is replaced whole (`null`:
    removed). Elements the message leaves empty are not in the template, so they stay as they
    are (A08: "empty field = no change"). JSON Patch travels in a Binary, as R4 says."""
    operations: list[dict[str, Any]] = []
    for name, value in resource.items():
        if name == "resourceType":
            continue
        operations.append({"op": "add", "path": f"/{name}", "value": value if value is not None else ""})
        if value is None:  # add-then-remove: removes whether or not the element was there
            operations.append({"op": "remove", "path": f"/{name}"})
    data = base64.b64encode(json.dumps(operations, ensure_ascii=False).encode()).decode("ascii")
    return {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": data}


# -- templates -----------------------------------------------------------------------------------


def render(template: Any, context: Context) -> Any:
    """A rendered copy of a template; None when it renders to nothing."""
    if isinstance(template, str):
        return render_string(template, context)
    if isinstance(template, list):
        items: list[Any] = []
        for item in template:
            if isinstance(item, dict) and "$each" in item:
                items.extend(_each(item, context))
                continue
            rendered = render(item, context)
            if rendered not in (None, "", [], {}):
                items.append(rendered)
        return items or None
    if isinstance(template, dict):
        if "$each" in template:
            return _each(template, context) or None
        if "$join" in template:
            return _join(template["$join"], context)
        if "$if" in template and not render_string(template["$if"], context):
            return None
        result = {}
        for key, value in template.items():
            if key.startswith("$"):
                continue
            rendered = render(value, context)
            if rendered not in (None, "", [], {}):
                result[key] = rendered
        return result or None
    return template


def _each(template: dict[str, Any], context: Context) -> list[Any]:
    return [r for r in (render(template["$item"], c) for c in _iterate(template["$each"], context)) if r not in (None, "", [], {})]


def _iterate(source: str, context: Context) -> list[Context]:
    if re.fullmatch(r"[A-Z][A-Z0-9]{2}", source):
        return [context.inside(segments={**context.segments, source: s}) for s in context.message.all(source)]
    match = FIELD.match(source)
    if match is None:
        raise ValueError(f"cannot iterate over {source}")
    segment = context.segments.get(match["segment"]) or context.message.first(match["segment"])
    if segment is None:
        return []
    return [context.inside(repetition=r) for r in segment.repetitions(int(match["field"])) if r]


def _join(spec: dict[str, Any], context: Context) -> str | None:
    """One string from repeated parts (`each` + `item`) or listed ones (`parts`); empty parts
    are skipped, and nothing at all gives nothing (not even the prefix)."""
    if "each" in spec:
        found = [render_string(spec["item"], c) for c in _iterate(spec["each"], context)]
    else:
        found = [render(part, context) for part in spec["parts"]]
    parts = [p for p in found if p]
    if not parts:
        return None
    return spec.get("prefix", "") + spec.get("separator", ", ").join(parts) + spec.get("suffix", "")


@lru_cache(maxsize=4096)
def _pieces(template: str) -> tuple[tuple[str, str | None], ...]:
    """A template as (literal text, placeholder expression or None) pieces, parsed once."""
    pieces: list[tuple[str, str | None]] = []
    position = 0
    for match in PLACEHOLDER.finditer(template):
        pieces.append((template[position : match.start()], match.group(1)))
        position = match.end()
    pieces.append((template[position:], None))
    return tuple(pieces)


def render_string(template: str, context: Context) -> str | None:
    """Fill the placeholders; None when any placeholder is empty."""
    out = []
    for literal, expression in _pieces(template):
        out.append(literal)
        if expression is not None:
            value = evaluate(expression, context)
            if not value:
                return None
            out.append(value)
    return "".join(out)


@lru_cache(maxsize=4096)
def _compiled(expression: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """`a | t1 ?? b` -> ((a, (t1,)), (b, ())): parsed once per distinct placeholder."""
    alternatives = []
    for alternative in expression.split("??"):
        source, *transforms = [part.strip() for part in alternative.split("|")]
        alternatives.append((source, tuple(transforms)))
    return tuple(alternatives)


@lru_cache(maxsize=4096)
def _path(path: str) -> tuple[str, int, str | None, int, int]:
    match = FIELD.match(path)
    if match is None:
        raise ValueError(f"not a field path: {path}")
    return match["segment"], int(match["field"]), match["select"], int(match["component"] or 1), int(match["sub"] or 1)


def evaluate(expression: str, context: Context) -> str:
    """One placeholder: alternatives, a source, transforms."""
    for source, transforms in _compiled(expression):
        value = _source(source, context)
        for transform in transforms:
            if not value:
                break
            value = _transform(transform, value, context, source)
        if value:
            return value
    return ""


@lru_cache(maxsize=4096)
def _source_kind(source: str) -> tuple[str, Any]:
    """What a placeholder source reads, parsed once per distinct source: ('literal', text),
    ('let', name), ('name', resource name), ('current', (component, sub) or None), ('field', path)."""
    if source.startswith("'") and source.endswith("'"):
        return "literal", source[1:-1]
    if source.startswith("$"):
        return "let", source[1:]
    if source.startswith("@"):
        return "name", source[1:]
    if source.startswith("~"):
        match = CURRENT.match(source)
        return "current", (int(match["component"] or 1), int(match["sub"] or 1)) if match else None
    return "field", source


def _source(source: str, context: Context) -> str:
    kind, what = _source_kind(source)
    if kind == "field":
        return _field_value(what, context)
    if kind == "literal":
        return what
    if kind == "let":
        return context.values.get(what, "")
    if kind == "name":
        return context.names.get(what, "")
    if what is None or context.repetition is None:  # `~`: the repetition being iterated
        return ""
    return leaf(context.repetition, what[0], what[1], context.message.separators)


def _field_value(path: str, context: Context) -> str:
    name, number, select, component, sub = _path(path)
    segment = context.segments.get(name) or context.message.first(name)
    if segment is None:
        return ""
    if segment.name == "MSH" and number in (1, 2):
        return segment.value(number)
    repetitions = segment.repetitions(number)
    if select is None:
        chosen = repetitions[:1]
    elif select.isdigit():
        chosen = repetitions[int(select) - 1 : int(select)]
    else:
        which, _, wanted = select.partition("=")
        chosen = [r for r in repetitions if leaf(r, int(which), 1, segment.separators) == wanted][:1]
    return leaf(chosen[0], component, sub, segment.separators).strip() if chosen else ""


TRANSFORMS: dict[str, Callable[[str], str]] = {
    "upper": str.upper,
    "lower": str.lower,
    "title": lambda v: " ".join(w.capitalize() for w in v.split(" ")),
    "oid": lambda v: v if v.startswith("urn:") else f"urn:oid:{v}",
}


def _transform(name: str, value: str, context: Context, source: str) -> str:
    if name in TRANSFORMS:
        return TRANSFORMS[name](value)
    if name in ("dtm", "date", "ddmmyyyy", "hhmm"):
        return _date(name, value, source)
    if name.startswith(("map:", "map?:")):
        assert context.tables is not None
        table = name.split(":", 1)[1]
        return context.tables.translate(table, value, strict=not name.startswith("map?"))
    raise ValueError(f"unknown transform {name}")


def _date(kind: str, value: str, source: str) -> str:
    match = DTM.match(value)
    if match is None:
        raise MappingError("102", f"{source} is not an HL7 date/time (DTM): '{value[:30]}'", source)
    year, month, day, hour, minute, second, _, offset = match.groups()
    if kind == "ddmmyyyy":
        return f"{day or '01'}/{month or '01'}/{year}"
    if kind == "hhmm":
        return f"{hour or '00'}h{minute or '00'}"
    if kind == "date" or hour is None:
        return "-".join(p for p in (year, month, day) if p)
    try:
        moment = datetime(int(year), int(month or 1), int(day or 1), int(hour), int(minute or 0), int(second or 0))
    except ValueError:
        raise MappingError("102", f"{source} is not a real date/time: '{value[:30]}'", source) from None
    if offset:
        zone = f"{offset[:3]}:{offset[3:]}"
    else:  # no offset: the sender's local time (French feeds: Europe/Paris, summer time included)
        zone = moment.replace(tzinfo=LOCAL_TIME).strftime("%z")
        zone = f"{zone[:3]}:{zone[3:]}"
    return f"{year}-{month}-{day}T{hour}:{minute or '00'}:{second or '00'}{zone}"


__all__ = ["ConceptMaps", "Mapping", "MappingError", "Mappings", "evaluate", "load_mappings", "render", "to_bundle"]
