"""R4 Narrative XHTML rules (txt-1, txt-2) on every `div`: a well-formed XHTML `div` holding
only the elements and attributes the Narrative datatype allows (narrative-xhtml.json), no
script URLs, and some non-whitespace content.

A narrative is shown to people by every client that displays the resource: a `<script>`,
an `onerror=` or a `javascript:` link in it would run in their browser. So this is checked
on every write, not only for resources claiming our profiles.

Parsed with expat, event by event: no document type declaration, no entity declaration is
accepted (no entity expansion attack). A narrative is XML: only XML's five named references
(`&lt;` ...) and numeric ones (`&#160;`); HTML's names (`&nbsp;`, `&reg;`) are refused, as the
HL7 Java validator does (validator test case xml-bad-entities-json).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from xml.parsers import expat

from fhir_server.outcome import Issue

RULES_FILE = Path(__file__).with_name("narrative-xhtml.json")
SEPARATOR = "\x1f"  # expat's namespace separator: never in a name


@dataclass(frozen=True)
class _Rules:
    namespace: str
    elements: frozenset[str]
    attributes: frozenset[str]
    element_attributes: frozenset[str]
    url_attributes: frozenset[str]
    refused_schemes: frozenset[str]


@lru_cache(maxsize=1)
def _rules() -> _Rules:
    data = json.loads(RULES_FILE.read_text(encoding="utf-8"))
    return _Rules(data["namespace"], *(frozenset(data[key]) for key in (
        "elements", "attributes", "element_attributes", "url_attributes", "refused_schemes")))


def internal_links(div: str) -> tuple[list[str], set[str]]:
    """The `#` links of a narrative (`href="#x"` -> `x`) and the anchors it offers (`id`, `name`);
    none when it cannot be read (`narrative_issues` says why)."""
    links: list[str] = []
    anchors: set[str] = set()

    def start(name: str, attributes: dict[str, str]) -> None:
        href = attributes.get("href")
        if isinstance(href, str) and href.startswith("#") and len(href) > 1:
            links.append(href[1:])
        anchors.update(v for k, v in attributes.items() if k in ("id", "name"))

    parser = expat.ParserCreate()
    parser.StartElementHandler = start
    parser.StartDoctypeDeclHandler = parser.EntityDeclHandler = _refuse
    try:
        parser.Parse(div, True)
    except (expat.ExpatError, _Declaration):
        return [], set()
    return links, anchors


def _refuse(*args: object) -> None:
    raise _Declaration()


def narrative_issues(div: str, path: str) -> list[Issue]:
    """What is wrong with one Narrative.div (empty when it is valid R4 narrative)."""
    checker = _Checker(_rules(), path)
    try:
        checker.parse(div)
    except _Declaration:
        return [Issue("invalid", "A narrative may not declare a document type or entities", expression=path)]
    except expat.ExpatError as error:
        return [Issue("invalid", f"The narrative is not well-formed XHTML: {expat.errors.messages.get(error.code, 'unreadable')}",
                      expression=path)]
    return checker.issues


class _Declaration(Exception):
    """A DOCTYPE or ENTITY declaration met while parsing."""


class _Checker:
    def __init__(self, rules: _Rules, path: str):
        self._rules = rules
        self._path = path
        self._depth = 0
        self._content = False
        self.issues: list[Issue] = []

    def parse(self, div: str) -> None:
        parser = expat.ParserCreate(namespace_separator=SEPARATOR)
        parser.StartElementHandler = self._start
        parser.EndElementHandler = self._end
        parser.CharacterDataHandler = self._text
        parser.StartDoctypeDeclHandler = parser.EntityDeclHandler = _refuse
        parser.Parse(div, True)
        if not self._content:
            self._issue("txt-2", "The narrative SHALL have some non-whitespace content")

    def _start(self, qualified: str, attributes: dict[str, str]) -> None:
        namespace, _, name = qualified.rpartition(SEPARATOR)
        if self._depth == 0 and (name != "div" or namespace != self._rules.namespace):
            self._issue("txt-1", f"The narrative must be an XHTML div (xmlns=\"{self._rules.namespace}\"), not '{_clip(name)}'")
        elif namespace != self._rules.namespace:
            self._issue("txt-1", f"Element '{_clip(name)}' is not in the XHTML namespace")
        elif name not in self._rules.elements:
            self._issue("txt-1", f"Element '{_clip(name)}' is not allowed in a narrative")
        for attribute, value in attributes.items():
            self._check_attribute(name, attribute, value)
        if name == "img":
            self._content = True
        self._depth += 1

    def _check_attribute(self, element: str, qualified: str, value: str) -> None:
        namespace, _, attribute = qualified.rpartition(SEPARATOR)
        name = f"xml:{attribute}" if namespace == "http://www.w3.org/XML/1998/namespace" else attribute
        if name not in self._rules.attributes and f"{element}.{name}" not in self._rules.element_attributes:
            self._issue("txt-1", f"Attribute '{_clip(name)}' is not allowed on '{_clip(element)}' in a narrative")
        elif name in self._rules.url_attributes and _scheme(value) in self._rules.refused_schemes:
            self._issue("txt-1", f"A {_scheme(value)}: URL is not allowed in a narrative ('{name}' on '{_clip(element)}')")

    def _end(self, qualified: str) -> None:
        self._depth -= 1

    def _text(self, data: str) -> None:
        if data.strip():
            self._content = True

    def _issue(self, key: str, message: str) -> None:
        said = f"Constraint {key} failed: {message}"
        if not any(i.diagnostics == said for i in self.issues):
            self.issues.append(Issue("invalid", said, expression=self._path))


def _scheme(url: str) -> str:
    """A URL's scheme as a browser reads it (control characters and spaces ignored), lower case."""
    cleaned = "".join(c for c in url if c > " ").lower()
    scheme, colon, _ = cleaned.partition(":")
    return scheme if colon and scheme.isalnum() else ""


def _clip(text: str) -> str:
    return text[:40]


__all__ = ["internal_links", "narrative_issues"]
