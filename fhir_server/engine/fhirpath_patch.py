"""FHIRPath Patch (R4 `fhirpatch.html`): a Parameters resource of add / insert / delete /
replace / move operations, applied to a copy of a resource.

Paths are the FHIRPath subset patch documents use: element names (choice types by their
base name), `[n]` indexes, `first()`, `last()`, `where(a.b = 'literal' and ...)` and
`extension('url')`. Navigation follows the R4 digest, so an unknown element is an error
rather than an empty result, and an added element becomes a list when R4 says it repeats.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, replace
from typing import Any

from fhir_server.outcome import FhirError
from fhir_server.spec import Spec

OPERATION_TYPES = ("add", "insert", "delete", "replace", "move")
INDEXED = re.compile(r"^(?P<name>[A-Za-z][A-Za-z0-9_]*)\[(?P<index>[0-9]+)\]$")
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
FUNCTION = re.compile(r"^(?P<name>where|first|last|extension)\((?P<argument>.*)\)$", re.DOTALL)
COMPARISON = re.compile(r"^\s*(?P<path>[A-Za-z][A-Za-z0-9_.]*)\s*=\s*(?P<literal>'(?:[^'\\]|\\.)*'|true|false|-?[0-9]+(?:\.[0-9]+)?)\s*$")


def bad_patch(text: str) -> FhirError:
    """The patch document itself is wrong (400)."""
    return FhirError.of(400, "invalid", f"FHIRPath Patch: {text}")


def unprocessable(text: str) -> FhirError:
    """The patch is well formed but cannot apply to this resource (422)."""
    return FhirError.of(422, "processing", f"FHIRPath Patch: {text}")


@dataclass(frozen=True)
class Location:
    """Where one element lives: `holder[key]`, or `holder[key][index]` for a list item."""

    holder: dict[str, Any]
    key: str
    index: int | None
    type: str | None  # the element's R4 type (a structure name), when known

    @property
    def value(self) -> Any:
        item = self.holder[self.key]
        return item if self.index is None else item[self.index]


@dataclass(frozen=True)
class Operation:
    type: str
    path: str
    name: str | None
    value: Any
    from_parts: bool  # a complex value spelt as parts: lists are made where R4 says the element repeats
    value_type: str | None  # the suffix of value[x] ("String", "Coding"), for choice elements
    index: int | None
    source: int | None
    destination: int | None


def apply_fhirpath_patch(spec: Spec, resource: dict[str, Any], parameters: Any) -> dict[str, Any]:
    """The patched copy of `resource` (which is left untouched)."""
    operations = read_operations(parameters)
    patched = copy.deepcopy(resource)
    navigator = _Navigator(spec, patched)
    for number, operation in enumerate(operations):
        try:
            _apply(navigator, operation)
        except FhirError as error:
            first = error.issues[0]
            error.issues[0] = replace(first, diagnostics=f"{first.diagnostics} (operation {number})",
                                      expression=f"Parameters.parameter[{number}]")
            raise
    return patched


# -- reading the Parameters -----------------------------------------------------------------


def read_operations(parameters: Any) -> list[Operation]:
    if not isinstance(parameters, dict) or parameters.get("resourceType") != "Parameters":
        raise bad_patch("the body must be a Parameters resource")
    found = parameters.get("parameter")
    if not isinstance(found, list) or not found:
        raise bad_patch("the Parameters resource has no operation")
    operations = []
    for number, parameter in enumerate(found):
        if not isinstance(parameter, dict) or parameter.get("name") != "operation":
            raise bad_patch(f"parameter {number} is not named 'operation'")
        operations.append(_operation(parameter.get("part"), number))
    return operations


def _operation(parts: Any, number: int) -> Operation:
    if not isinstance(parts, list):
        raise bad_patch(f"operation {number} has no parts")
    named: dict[str, dict[str, Any]] = {}
    for part in parts:
        if not isinstance(part, dict) or not isinstance(part.get("name"), str):
            raise bad_patch(f"operation {number} has a part without a name")
        named[part["name"]] = part
    kind = _primitive(named.get("type"), "valueCode")
    if kind not in OPERATION_TYPES:
        raise bad_patch(f"operation {number}: type must be one of {', '.join(OPERATION_TYPES)}")
    path = _primitive(named.get("path"), "valueString")
    if not path:
        raise bad_patch(f"operation {number}: path is required")
    value, value_type = _value(named.get("value"))
    operation = Operation(
        type=kind,
        path=path,
        name=_primitive(named.get("name"), "valueString"),
        value=value,
        from_parts=value is not None and value_type is None,
        value_type=value_type,
        index=_integer(named.get("index"), number, "index"),
        source=_integer(named.get("source"), number, "source"),
        destination=_integer(named.get("destination"), number, "destination"),
    )
    _check_required(operation, number)
    return operation


def _check_required(operation: Operation, number: int) -> None:
    needed = {
        "add": ("name", "value"),
        "insert": ("value", "index"),
        "replace": ("value",),
        "move": ("source", "destination"),
        "delete": (),
    }[operation.type]
    for field in needed:
        if getattr(operation, field) is None:
            raise bad_patch(f"operation {number} ({operation.type}) needs a '{field}' part")


def _primitive(part: dict[str, Any] | None, key: str) -> Any:
    if part is None:
        return None
    value = part.get(key)
    if value is None:  # tolerate another primitive type for the same thing (valueString for a code)
        value = next((v for k, v in part.items() if k.startswith("value")), None)
    return value


def _integer(part: dict[str, Any] | None, number: int, name: str) -> int | None:
    value = _primitive(part, "valueInteger")
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise bad_patch(f"operation {number}: {name} must be a non-negative integer")
    return value


def _value(part: dict[str, Any] | None) -> tuple[Any, str | None]:
    """The value of a `value` part: value[x], or a complex value spelt as nested parts."""
    if part is None:
        return None, None
    for key, value in part.items():
        if key.startswith("value") and len(key) > 5:
            return value, key[5:]
    if isinstance(part.get("part"), list):
        return _from_parts(part["part"]), None
    return None, None


def _from_parts(parts: list[Any]) -> dict[str, Any]:
    built: dict[str, Any] = {}
    for part in parts:
        if not isinstance(part, dict) or not isinstance(part.get("name"), str):
            raise bad_patch("a value part has no name")
        value, _ = _value(part)
        if part["name"] in built:  # repeated names make a list
            existing = built[part["name"]]
            built[part["name"]] = [*existing, value] if isinstance(existing, list) else [existing, value]
        else:
            built[part["name"]] = value
    return built


# -- navigating -----------------------------------------------------------------------------


class _Navigator:
    def __init__(self, spec: Spec, resource: dict[str, Any]):
        self.spec = spec
        self.resource = resource
        self.resource_type = resource.get("resourceType")

    def evaluate(self, path: str) -> list[Location | dict[str, Any]]:
        """The elements a path selects (the resource itself is a bare dict)."""
        segments = split_path(path)
        if segments and segments[0] == self.resource_type:
            segments = segments[1:]
        elif segments and segments[0][:1].isupper() and NAME.match(segments[0]):
            raise bad_patch(f"path {path[:80]!r} does not start with {self.resource_type}")
        current: list[Location | dict[str, Any]] = [self.resource]
        for segment in segments:
            current = self._step(current, segment)
        return current

    def structure_of(self, item: Location | dict[str, Any]) -> str | None:
        return self.resource_type if isinstance(item, dict) else item.type

    def element(self, structure: str | None, name: str, holder: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
        """The JSON key and digest entry of element `name` (choice elements by base name)."""
        elements = self.spec.structures.get(structure or "", {})
        if not elements:
            return name, None
        if name in elements:
            return name, elements[name]
        choices = [k for k, info in elements.items() if info.get("choice") == name]
        if choices:
            present = next((k for k in choices if k in holder), choices[0])
            return present, elements[present]
        raise unprocessable(f"{structure} has no element '{name}'")

    def shape(self, value: Any, structure: str | None) -> Any:
        """A value built from parts, with lists where the element repeats in R4."""
        elements = self.spec.structures.get(structure or "", {})
        if not isinstance(value, dict) or not elements:
            return value
        shaped = {}
        for key, item in value.items():
            info = elements.get(key, {})
            items = item if isinstance(item, list) else [item]
            items = [self.shape(i, info.get("type")) for i in items]
            shaped[key] = items if info.get("array") else (items[0] if len(items) == 1 else items)
        return shaped

    def _step(self, current: list[Location | dict[str, Any]], segment: str) -> list[Location | dict[str, Any]]:
        function = FUNCTION.match(segment)
        if function:
            return self._function(current, function["name"], function["argument"])
        indexed = INDEXED.match(segment)
        name = indexed["name"] if indexed else segment
        if not NAME.match(name):
            raise bad_patch(f"unsupported path segment {segment[:60]!r}")
        selected = self._children(current, name)
        if indexed:
            position = int(indexed["index"])
            return [selected[position]] if position < len(selected) else []
        return selected

    def _children(self, current: list[Location | dict[str, Any]], name: str) -> list[Location | dict[str, Any]]:
        found: list[Location | dict[str, Any]] = []
        for item in current:
            holder = item if isinstance(item, dict) else item.value
            if not isinstance(holder, dict):
                continue
            key, info = self.element(self.structure_of(item), name, holder)
            child_type = info.get("type") if info else None
            if key not in holder:
                continue
            if isinstance(holder[key], list):
                found.extend(Location(holder, key, i, child_type) for i in range(len(holder[key])))
            else:
                found.append(Location(holder, key, None, child_type))
        return found

    def _function(self, current: list[Location | dict[str, Any]], name: str, argument: str) -> list[Location | dict[str, Any]]:
        if name == "first":
            return current[:1]
        if name == "last":
            return current[-1:]
        if name == "extension":
            url = _literal(argument.strip())
            return [e for e in self._children(current, "extension") if _get(e, "url") == url]
        conditions = [_comparison(c) for c in re.split(r"\s+and\s+", argument)]
        return [item for item in current if all(self._holds(item, path, value) for path, value in conditions)]

    def _holds(self, item: Location | dict[str, Any], path: str, expected: Any) -> bool:
        current: list[Location | dict[str, Any]] = [item]
        for name in path.split("."):
            current = self._children(current, name)
        return any((c.value if isinstance(c, Location) else c) == expected for c in current)


def split_path(path: str) -> list[str]:
    """Split a path at the dots that are outside brackets and quotes."""
    segments, depth, quoted, start = [], 0, False, 0
    for position, char in enumerate(path):
        if char == "'" and (position == 0 or path[position - 1] != "\\"):
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
        elif not quoted and depth == 0 and char == ".":
            segments.append(path[start:position].strip())
            start = position + 1
    segments.append(path[start:].strip())
    if depth != 0 or quoted or any(not s for s in segments):
        raise bad_patch(f"cannot read the path {path[:80]!r}")
    return segments


def _comparison(text: str) -> tuple[str, Any]:
    match = COMPARISON.match(text)
    if match is None:
        raise bad_patch(f"where() supports `path = literal` joined by `and`, not {text.strip()[:60]!r}")
    return match["path"], _literal(match["literal"])


def _literal(text: str) -> Any:
    if text.startswith("'") and text.endswith("'") and len(text) >= 2:
        return re.sub(r"\\(.)", r"\1", text[1:-1])
    if text in ("true", "false"):
        return text == "true"
    try:
        return float(text) if "." in text else int(text)
    except ValueError:
        raise bad_patch(f"unsupported literal {text[:40]!r}") from None


def _get(item: Location | dict[str, Any], key: str) -> Any:
    value = item.value if isinstance(item, Location) else item
    return value.get(key) if isinstance(value, dict) else None


# -- applying -------------------------------------------------------------------------------


def _apply(navigator: _Navigator, operation: Operation) -> None:
    if operation.type == "add":
        _add(navigator, operation)
    elif operation.type == "insert":
        items, holder, key, item_type = _collection(navigator, operation.path)
        if operation.index is None or operation.index > len(items):
            raise unprocessable(f"insert index {operation.index} is beyond the {len(items)} items of {operation.path[:80]}")
        value = _shaped(navigator, operation, item_type)
        holder[key] = [*items[: operation.index], value, *items[operation.index :]]
    elif operation.type == "move":
        items, holder, key, _ = _collection(navigator, operation.path)
        if operation.source is None or operation.destination is None or max(operation.source, operation.destination) >= len(items):
            raise unprocessable(f"move {operation.source} → {operation.destination} is outside the {len(items)} items")
        moved = items.pop(operation.source)
        items.insert(operation.destination, moved)
        holder[key] = items
    else:
        selected = navigator.evaluate(operation.path)
        if len(selected) > 1:
            raise unprocessable(f"{operation.type}: the path selects {len(selected)} elements, not one")
        if not selected:
            if operation.type == "delete":
                return  # deleting what is not there is not an error
            raise unprocessable(f"replace: the path {operation.path[:80]!r} selects nothing")
        target = selected[0]
        if not isinstance(target, Location):
            raise unprocessable(f"{operation.type} cannot apply to the resource itself")
        if operation.type == "delete":
            _remove(target)
        else:
            _replace(target, _shaped(navigator, operation, target.type))


def _holder(navigator: _Navigator, path: str) -> tuple[Location | dict[str, Any], dict[str, Any]]:
    """The one element a path selects, which must be able to hold children."""
    selected = navigator.evaluate(path)
    if len(selected) != 1:
        raise unprocessable(f"the path {path[:80]!r} selects {len(selected)} elements, not one")
    target = selected[0]
    holder = target if isinstance(target, dict) else target.value
    if not isinstance(holder, dict):
        raise unprocessable(f"{path[:80]!r} is not an element that can hold others")
    return target, holder


def _add(navigator: _Navigator, operation: Operation) -> None:
    target, holder = _holder(navigator, operation.path)
    name = str(operation.name)
    key, info = navigator.element(navigator.structure_of(target), name, holder)
    if info is not None and info.get("choice") == name and operation.value_type:
        key = name + operation.value_type[:1].upper() + operation.value_type[1:]
    repeats = info.get("array", False) if info is not None else isinstance(holder.get(key), list)
    value = _shaped(navigator, operation, info.get("type") if info else None)
    if repeats:
        holder[key] = [*(holder.get(key) or []), value]
    elif key in holder:
        raise unprocessable(f"add: {name} already exists and does not repeat; use replace")
    else:
        holder[key] = value


def _shaped(navigator: _Navigator, operation: Operation, structure: str | None) -> Any:
    return navigator.shape(operation.value, structure) if operation.from_parts else operation.value


def _collection(navigator: _Navigator, path: str) -> tuple[list[Any], dict[str, Any], str, str | None]:
    """The list a path names (insert, move), with its holder and key."""
    segments = split_path(path)
    last = segments[-1]
    if not NAME.match(last) or len(segments) < 2:
        raise bad_patch(f"the path {path[:80]!r} must end with the name of a repeating element")
    parent, holder = _holder(navigator, ".".join(segments[:-1]))
    key, info = navigator.element(navigator.structure_of(parent), last, holder)
    items = holder.get(key, [])
    if (info is not None and not info.get("array")) or not isinstance(items, list):
        raise unprocessable(f"{last} does not repeat: it cannot be a target of insert or move")
    return list(items), holder, key, info.get("type") if info else None


def _remove(target: Location) -> None:
    if target.index is None:
        del target.holder[target.key]
        return
    items = target.holder[target.key]
    del items[target.index]
    if not items:
        del target.holder[target.key]


def _replace(target: Location, value: Any) -> None:
    if target.index is None:
        target.holder[target.key] = value
    else:
        target.holder[target.key][target.index] = value


__all__ = ["apply_fhirpath_patch", "read_operations", "split_path"]
