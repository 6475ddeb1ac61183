"""FHIR XML, both ways, driven by the R4 digest (element order, types, choice names, which
elements repeat): one converter, no second model of FHIR.

JSON → XML: elements in their definition order; primitives as `<name value="…"/>` with their
`_name` id and extensions inside; `id` of a datatype or backbone element and `url` of an
extension as attributes; resources inside `contained`, `resource`, `outcome`… wrapped in an
element of their type; the narrative `div` as XHTML in its own namespace.
XML → JSON: the reverse; primitives become JSON booleans and numbers where R4 says so.
A document type declaration or entity is refused (no entity expansion, no external fetch).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
import xml.parsers.expat
from typing import Any
from xml.sax.saxutils import quoteattr

from fhir_server.outcome import FhirError
from fhir_server.spec import Spec
from fhir_server.validation.structural import MAX_DEPTH  # an XML body nests no deeper than a JSON one

FHIR_NS = "http://hl7.org/fhir"
XHTML_NS = "http://www.w3.org/1999/xhtml"
RESOURCE_TYPES = ("Resource", "DomainResource")
DOCTYPE = re.compile(rb"<!DOCTYPE|<!ENTITY", re.IGNORECASE)
INTEGERS = frozenset({"integer", "positiveInt", "unsignedInt"})
# characters an XML parser would normalise in an attribute value (to spaces) unless written as references
ATTRIBUTE_ENTITIES = {"\n": "&#10;", "\r": "&#13;", "\t": "&#9;"}
ET.register_namespace("", XHTML_NS)  # a re-serialised div keeps XHTML as its default namespace


class XmlFormat:
    def __init__(self, spec: Spec):
        self._spec = spec
        self._narratives: list[str] = []

    # -- JSON -> XML --------------------------------------------------------------------------

    def to_xml(self, resource: dict[str, Any]) -> bytes:
        parts: list[str] = ['<?xml version="1.0" encoding="UTF-8"?>']
        self._resource(resource, parts, top=True)
        return "".join(parts).encode("utf-8")

    def _resource(self, resource: dict[str, Any], parts: list[str], top: bool = False) -> None:
        resource_type = str(resource.get("resourceType"))
        if resource_type not in self._spec.structures:
            raise ValueError(f"not a resource type: {resource_type[:40]}")
        parts.append(f'<{resource_type} xmlns="{FHIR_NS}">')
        self._children(resource, resource_type, parts, resource_level=True)
        parts.append(f"</{resource_type}>")

    def _children(self, value: dict[str, Any], type_name: str, parts: list[str], resource_level: bool = False) -> None:
        members = self._spec.structures[type_name]
        for name, info in members.items():
            if name not in value and f"_{name}" not in value:
                continue
            if (name == "id" and not resource_level) or (name == "url" and type_name == "Extension"):
                continue  # attributes, written with the start tag
            self._element(name, info, value.get(name), value.get(f"_{name}"), parts)

    def _element(self, name: str, info: dict[str, Any], value: Any, extra: Any, parts: list[str]) -> None:
        type_name = info["type"]
        values = value if isinstance(value, list) else [value]
        extras = extra if isinstance(extra, list) else [extra] * len(values)
        if value is None and extra is not None:
            values = [None] * (len(extra) if isinstance(extra, list) else 1)
        for index, item in enumerate(values):
            more = extras[index] if index < len(extras) else None
            if type_name == "xhtml":
                parts.append(_xhtml(str(item)))
            elif type_name in self._spec.primitives:
                self._primitive(name, type_name, item, more, parts)
            elif type_name in RESOURCE_TYPES:
                parts.append(f"<{name}>")
                self._resource(item, parts)
                parts.append(f"</{name}>")
            else:
                attributes = _attributes(item, type_name)
                parts.append(f"<{name}{attributes}>")
                self._children(item, type_name, parts)
                parts.append(f"</{name}>")

    def _primitive(self, name: str, type_name: str, value: Any, extra: Any, parts: list[str]) -> None:
        attributes = ""
        if isinstance(extra, dict) and "id" in extra:
            attributes += f" id={_attribute(str(extra['id']))}"
        if value is not None:
            text = ("true" if value else "false") if isinstance(value, bool) else _number(value) if isinstance(value, (int, float)) else value
            attributes += f" value={_attribute(str(text))}"
        extensions = (extra or {}).get("extension") if isinstance(extra, dict) else None
        if not extensions:
            parts.append(f"<{name}{attributes}/>")
            return
        parts.append(f"<{name}{attributes}>")
        self._element("extension", self._spec.structures["Extension"]["extension"], extensions, None, parts)
        parts.append(f"</{name}>")

    # -- XML -> JSON --------------------------------------------------------------------------

    def from_xml(self, data: bytes) -> dict[str, Any]:
        if DOCTYPE.search(data):
            raise FhirError.of(400, "structure", "An XML body may not declare a document type or entities")
        try:
            root = ET.fromstring(data)
            self._narratives = _narratives(data) if XHTML_NS.encode() in data else []  # a second pass only where a div is
        except (ET.ParseError, xml.parsers.expat.ExpatError) as error:
            raise FhirError.of(400, "structure", f"The body is not well-formed XML ({str(error)[:80]})") from None
        return self._read_resource(root)

    def _read_resource(self, element: ET.Element, depth: int = 0) -> dict[str, Any]:
        namespace, resource_type = _split(element.tag)
        if namespace != FHIR_NS or resource_type not in self._spec.resource_types:
            raise FhirError.of(400, "structure", f"<{resource_type[:40]}> in namespace {namespace[:60]!r} is not a FHIR resource")
        resource: dict[str, Any] = {"resourceType": resource_type}
        self._read_children(element, resource_type, resource, depth + 1)
        return resource

    def _read_children(self, element: ET.Element, type_name: str, into: dict[str, Any], depth: int = 0) -> None:
        if depth > MAX_DEPTH:
            raise FhirError.of(422, "too-costly", f"The XML nests deeper than {MAX_DEPTH} levels")
        members = self._spec.structures[type_name]
        for child in element:
            namespace, name = _split(child.tag)
            if namespace == XHTML_NS and name == "div" and "div" in members:
                raw = self._narratives.pop(0) if self._narratives else None
                into["div"] = raw if raw is not None and raw.startswith("<div") else _xhtml_text(child)
                continue
            if namespace != FHIR_NS or name not in members:
                raise FhirError.of(400, "structure", f"<{name[:40]}> is not an element of {type_name}", expression=f"{type_name}.{name[:40]}")
            info = members[name]
            child_type = info["type"]
            if child_type in self._spec.primitives:
                value, extra = self._read_primitive(child, child_type, depth + 1)
                if value is not None or info.get("array", False):  # an array keeps its places (null where only `_name` says)
                    _put(into, name, value, info.get("array", False))
                if extra:
                    _put_extra(into, name, extra, info.get("array", False), len(into.get(name) or []) if info.get("array") else 0)
                elif info.get("array") and f"_{name}" in into:
                    into[f"_{name}"].append(None)
            elif child_type in RESOURCE_TYPES:
                inner = [c for c in child]
                if len(inner) != 1:
                    raise FhirError.of(400, "structure", f"<{name}> holds one resource")
                _put(into, name, self._read_resource(inner[0], depth + 1), info.get("array", False))
            else:
                item: dict[str, Any] = {}
                if "id" in child.attrib:
                    item["id"] = child.attrib["id"]
                if child_type == "Extension" and "url" in child.attrib:
                    item["url"] = child.attrib["url"]
                self._read_children(child, child_type, item, depth + 1)
                _put(into, name, item, info.get("array", False))

    def _read_primitive(self, element: ET.Element, type_name: str, depth: int = 0) -> tuple[Any, dict[str, Any] | None]:
        text = element.attrib.get("value")
        value: Any = text
        if text is not None:
            kind = self._spec.primitives[type_name].get("json")
            if kind == "boolean":
                value = {"true": True, "false": False}.get(text, text)
            elif kind in ("number", "integer"):
                value = _parse_number(text, type_name)
        extra: dict[str, Any] = {}
        if "id" in element.attrib:
            extra["id"] = element.attrib["id"]
        extensions: dict[str, Any] = {}
        self._read_children(element, "Element", extensions, depth + 1)
        if extensions.get("extension"):
            extra["extension"] = extensions["extension"]
        return value, extra or None


def _attribute(text: str) -> str:
    return quoteattr(text, ATTRIBUTE_ENTITIES)


def _put(into: dict[str, Any], name: str, value: Any, array: bool) -> None:
    if array:
        into.setdefault(name, []).append(value)
    else:
        into[name] = value


def _put_extra(into: dict[str, Any], name: str, extra: dict[str, Any], array: bool, count: int) -> None:
    if not array:
        into[f"_{name}"] = extra
        return
    extras = into.setdefault(f"_{name}", [])
    extras.extend([None] * (count - 1 - len(extras)))
    extras.append(extra)


def _attributes(item: dict[str, Any], type_name: str) -> str:
    found = ""
    if isinstance(item, dict) and "id" in item:
        found += f" id={_attribute(str(item['id']))}"
    if type_name == "Extension" and isinstance(item, dict) and "url" in item:
        found += f" url={_attribute(str(item['url']))}"
    return found


def _number(value: int | float) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def _parse_number(text: str, type_name: str) -> Any:
    try:
        return int(text) if type_name in INTEGERS else (int(text) if re.fullmatch(r"-?\d+", text) else float(text))
    except ValueError:
        return text  # left as written: validation reports it


def _split(tag: str) -> tuple[str, str]:
    if tag.startswith("{"):
        namespace, _, name = tag[1:].partition("}")
        return namespace, name
    return "", tag


def _xhtml(div: str) -> str:
    """The narrative as XHTML (its own namespace declared when the JSON string lacks it)."""
    if "xmlns" not in div.split(">", 1)[0]:
        div = div.replace("<div", f'<div xmlns="{XHTML_NS}"', 1)
    return div.replace("\r", "&#13;")  # a carriage return survives XML's line-end normalisation


def _narratives(data: bytes) -> list[str]:
    """The narrative divs as written in the document, in document order: the JSON string keeps
    the XHTML exactly (entities, empty elements), which re-serialising would not."""
    found: list[str] = []
    starts: list[int] = []
    parser = xml.parsers.expat.ParserCreate(namespace_separator=" ")

    def start(name: str, _attributes: Any) -> None:
        if name.startswith(XHTML_NS + " "):
            starts.append(parser.CurrentByteIndex)

    def end(name: str) -> None:
        if name.startswith(XHTML_NS + " "):
            begin = starts.pop()
            if not starts:
                close = data.index(b">", parser.CurrentByteIndex) + 1
                found.append(data[begin:close].decode("utf-8").replace("&#13;", "\r"))

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.Parse(data, True)
    return found


def _xhtml_text(element: ET.Element) -> str:
    """A div written with a namespace prefix (the raw text would lack the default namespace)."""
    return ET.tostring(element, encoding="unicode", short_empty_elements=True).replace(" />", "/>")


__all__ = ["FHIR_NS", "XmlFormat"]
