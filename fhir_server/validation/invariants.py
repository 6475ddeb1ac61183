"""FHIRPath invariants, evaluated with fhirpathpy.

Two sources: the core R4 invariants of every element and type (`dom-*`, `ref-1`, `per-1`,
`ext-1`, `txt-*` …, from the digest) and the ones our profiles add. `ele-1` ("no empty
element") is checked natively by the structural pass. Expressions are compiled once.

fhirpathpy lacks functions the core invariants call. Given here: `hasValue()`; `resolve()`
by type only (a reference `Practitioner/1` resolves to an empty Practitioner: enough for
`resolve() is Practitioner`, which is how R4 invariants use it); `htmlChecks()` taken as true
here because the structural pass, which runs first on every write, has already applied the
XHTML rules of txt-1 and txt-2 to every narrative `div` (validation/narrative.py).

An invariant fails when it evaluates to `false`. An empty result passes, as in the reference
validators (`ref-1` on a Reference with only a `display` is empty, and valid). An expression
fhirpathpy cannot evaluate is reported as information, never as an error.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator

from fhirpathpy import compile as compile_fhirpath
from fhirpathpy.engine.nodes import ResourceNode
from fhirpathpy.models import models

from fhir_server.outcome import Issue
from fhir_server.search.references import reference_type
from fhir_server.spec import Spec

log = logging.getLogger("calipso.validation")

R4_MODEL = models["r4"]
ISSUE_SEVERITY = {"error": "error", "warning": "warning"}


def _has_value(data: list[Any]) -> bool:
    """FHIRPath hasValue(): a single primitive value."""
    return len(data) == 1 and isinstance(_unwrap(data[0]), (str, int, float, bool))


def _html_checks(data: list[Any]) -> bool:
    return True


def _unwrap(node: Any) -> Any:
    return getattr(node, "data", node)


def _resolve(data: list[Any]) -> list[Any]:
    """References resolved to an empty resource of the referenced type."""
    resolved = []
    for item in data:
        reference = _unwrap(item).get("reference") if isinstance(_unwrap(item), dict) else None
        target = reference_type(reference) if isinstance(reference, str) else None
        if target is not None:
            resolved.append(ResourceNode.create_node({"resourceType": target}, target))
    return resolved


def _no_local_reference(value: Any) -> bool | None:
    reference = value.get("reference") if isinstance(value, dict) else None
    return True if not (isinstance(reference, str) and reference.startswith("#")) else None


def _one_of_extension_or_value(value: Any) -> bool | None:
    if not isinstance(value, dict):
        return None
    return True if ("extension" in value) != (not _absent("value", value)) else None


def _period_in_order(value: Any) -> bool | None:
    """per-1, `start <= end`, decided natively. Where the two are at different precisions and
    the same at the coarser one (a start `2023-06-21`, an end `2023-06-21T06:20:00Z`), FHIRPath
    gives empty; the HL7 Java validator counts that as a failure, and so does this."""
    if not isinstance(value, dict):
        return None
    start, end = value.get("start"), value.get("end")
    if start is None or end is None:
        return True
    if not (isinstance(start, str) and isinstance(end, str)):
        return None
    if "T" in start and "T" in end:
        try:
            return datetime.fromisoformat(start.replace("Z", "+00:00")) <= datetime.fromisoformat(end.replace("Z", "+00:00"))
        except ValueError:
            return None  # fhirpathpy decides
    start_day, end_day = start.split("T")[0], end.split("T")[0]
    if "T" not in start and "T" not in end and len(start_day) == len(end_day):
        return start_day <= end_day
    common = min(len(start_day), len(end_day))
    return start_day[:common] < end_day[:common]


def _no_contained(value: Any) -> bool | None:
    """dom-2 to dom-5 speak only of contained resources: without any, they hold."""
    return True if isinstance(value, dict) and not value.get("contained") else None


def _narrative(value: Any) -> bool | None:
    """dom-6, `text.div.exists()`: settled by the presence of `text` and its `div`."""
    if not isinstance(value, dict):
        return None
    text = value.get("text")
    if text is None:
        return False
    return True if isinstance(text, dict) and isinstance(text.get("div"), str) else None


# Cheap verdicts on core invariants, tried before fhirpathpy (which costs 50-500 µs an
# expression). They answer "holds" (True) or "don't know" (None); only dom-6 also answers
# "fails", where a missing `text` settles it. tests/test_invariants.py checks each against
# fhirpathpy.
SHORTCUTS = {
    "dom-2": _no_contained,
    "dom-3": _no_contained,
    "dom-4": _no_contained,
    "dom-5": _no_contained,
    "ref-1": _no_local_reference,
    "ext-1": _one_of_extension_or_value,
    "per-1": _period_in_order,
    "dom-6": _narrative,
    "txt-1": lambda value: True,  # checked by the structural pass (validation/narrative.py)
    "txt-2": lambda value: True,
}

FUNCTIONS = {
    "hasValue": {"fn": _has_value, "arity": {0: []}},
    "htmlChecks": {"fn": _html_checks, "arity": {0: []}},
    "resolve": {"fn": _resolve, "arity": {0: []}},
}
OPTIONS = {"userInvocationTable": FUNCTIONS, "traceFn": lambda label, value: None}


@dataclass(frozen=True)
class Invariant:
    """One constraint: its key, severity, human text and compiled expression."""

    key: str
    severity: str
    human: str
    expression: str
    core: bool = True  # an R4 invariant (ours may reuse a key; shortcuts apply to R4's only)

    @property
    def guard(self) -> str | None:
        return _vacuous_without(self.expression)

    def verdict(self, value: Any, type_name: str, resource: dict[str, Any], root: dict[str, Any] | None = None) -> bool | None:
        """False when the expression gives `false` on `value` (of FHIR type `type_name`);
        None when it cannot be evaluated here.

        The type lets FHIRPath see choice elements (`value` for `valueString`). `resource` is
        FHIRPath's %resource, `root` its %rootResource: the container of a contained
        resource (a `#id` reference there points at a sibling), else `resource` itself.
        """
        if self.guard is not None and isinstance(value, dict) and _absent(self.guard, value):
            return True
        shortcut = SHORTCUTS.get(self.key) if self.core else None
        if shortcut is not None and (known := shortcut(value)) is not None:
            return known
        node = ResourceNode.create_node(value, type_name)
        try:
            result = _compiled(self.expression)(node, {"resource": resource, "rootResource": root or resource})
        except Exception:  # noqa: BLE001 - fhirpathpy raises bare Exceptions for what it lacks
            log.debug("invariant %s could not be evaluated", self.key)
            return None
        return result != [False]

    def check(self, value: Any, type_name: str, resource: dict[str, Any], location: str,
              root: dict[str, Any] | None = None) -> Issue | None:
        """The issue for this value, if any."""
        verdict = self.verdict(value, type_name, resource, root)
        if verdict is None:
            return Issue("informational", f"Constraint {self.key} was not checked: its FHIRPath is beyond this validator",
                         severity="information", expression=location)
        return None if verdict else self.issue(location)

    def issue(self, expression: str) -> Issue:
        return Issue(
            "invariant",
            f"Constraint {self.key} failed: {self.human}",
            severity=ISSUE_SEVERITY.get(self.severity, "error"),
            expression=expression,
        )


# fhirpathpy's as() refuses collections, where R4's dom-3 relies on it filtering them;
# ofType() is the same filter and fhirpathpy accepts it. fhirpathpy's `is Boolean` (System)
# is false for a FHIR boolean, which the reference validators take as one (que-7 refused
# every valid `exists` enableWhen); `is boolean` names the FHIR type it means.
COMPATIBLE_SPELLINGS = (("descendants().as(", "descendants().ofType("), ("answer is Boolean", "answer is boolean"))


@lru_cache(maxsize=None)
def _compiled(expression: str) -> Callable[..., list[Any]]:
    for written, accepted in COMPATIBLE_SPELLINGS:
        expression = expression.replace(written, accepted)
    return compile_fhirpath(expression, R4_MODEL, OPTIONS)


def _absent(member: str, value: dict[str, Any]) -> bool:
    """Whether FHIRPath sees no `member` in `value` (`valueString` is a `value`: choice types)."""
    return member not in value and not any(k.startswith(member) and k[len(member):len(member) + 1].isupper() for k in value)


@lru_cache(maxsize=None)
def _vacuous_without(expression: str) -> str | None:
    """The member whose absence makes the expression true, if its shape proves one.

    - `a.x.empty() and a.y.z.empty()`: every conjunct is one path from member `a` ending in
      `empty()`, so without `a` each is `{}.empty()`, true (dom-2…dom-5 without `contained`);
    - `a.x.empty() or …`: one disjunct is, and `true or anything` is true (com-1 without
      `received`);
    - `a.x.exists() implies …`: without `a` the premise is false, and `false implies anything`
      is true (ctm-1 without `onBehalfOf`).
    """
    members = {_single_path_member(part, ".empty()") for part in top_level_split(expression, " and ")}
    if len(members) == 1 and None not in members:
        return members.pop()
    premise = top_level_split(expression, " implies ")  # the loosest operator: `a or b implies c`
    if len(premise) == 2:
        return _single_path_member(premise[0], ".exists()")
    if len(premise) == 1 and len(top_level_split(expression, " xor ")) == 1:
        for part in top_level_split(expression, " or "):
            if (member := _single_path_member(part, ".empty()")) is not None:
                return member
    return None


def top_level_split(expression: str, separator: str) -> list[str]:
    """The parts of a FHIRPath expression between `separator`s outside parentheses, brackets and quotes."""
    parts, depth, quoted, start, index = [], 0, False, 0, 0
    while index < len(expression):
        char = expression[index]
        if char == "'":
            quoted = not quoted
        elif not quoted and char in "([":
            depth += 1
        elif not quoted and char in ")]":
            depth -= 1
        elif not quoted and depth == 0 and expression.startswith(separator, index):
            parts.append(expression[start:index])
            start = index + len(separator)
            index = start
            continue
        index += 1
    parts.append(expression[start:])
    return [p.strip() for p in parts]


def _single_path_member(part: str, ending: str) -> str | None:
    """`a.b(...)<ending>` with no top-level operator -> `a`; anything else -> None."""
    if not part.endswith(ending) or len(top_level_split(part, " ")) != 1:
        return None
    head = part.split(".", 1)[0]
    return head if head.isidentifier() else None


@lru_cache(maxsize=None)
def invariants_of(entries: tuple[tuple[str, str, str, str], ...]) -> tuple[Invariant, ...]:
    """Invariant objects for digest entries, shared across calls, published errors corrected."""
    return tuple(Invariant(*_corrected(entry)) for entry in entries)


CORRECTIONS_FILE = Path(__file__).with_name("invariant-corrections.json")


@lru_cache(maxsize=1)
def _corrections() -> dict[tuple[str, str], str]:
    data = json.loads(CORRECTIONS_FILE.read_text(encoding="utf-8"))
    return {(key, fix["published"]): fix["corrected"] for key, fix in data.items() if not key.startswith("_")}


def _corrected(entry: tuple[str, str, str, str]) -> tuple[str, str, str, str]:
    """The entry with its expression corrected where R4 published a wrong one (invariant-corrections.json)."""
    key, severity, human, expression = entry
    return key, severity, human, _corrections().get((key, expression), expression)


class CoreInvariants:
    """Walks a resource along the R4 digest and checks every core invariant that applies."""

    def __init__(self, spec: Spec):
        self._spec = spec
        self._root: dict[str, tuple[Invariant, ...]] = {
            name: invariants_of(tuple(tuple(e) for e in entries)) for name, entries in spec.invariants.items()
        }
        self._root_keys = {name: frozenset(i.key for i in found) for name, found in self._root.items()}
        self._members: dict[str, dict[str, tuple[Invariant, ...]]] = {
            structure: {
                name: invariants_of(tuple(tuple(e) for e in info["invariants"]))
                for name, info in members.items()
                if "invariants" in info
            }
            for structure, members in spec.structures.items()
        }

    def check(self, resource: dict[str, Any], resource_type: str) -> list[Issue]:
        """Issues (errors and warnings) for the core invariants `resource` breaks."""
        issues: list[Issue] = []
        for invariant, value, type_name, owner, root, expression in self._applicable(resource, resource_type):
            issue = invariant.check(value, type_name, owner, expression, root)
            if issue is not None:
                issues.append(issue)
        return issues

    def _applicable(
        self, value: dict[str, Any], structure: str
    ) -> Iterator[tuple[Invariant, Any, str, dict[str, Any], dict[str, Any], str]]:
        """(invariant, context value, its type, its resource, that resource's root, location)
        for every value, iteratively. A contained resource's root is its container's; a
        Bundle entry's resource is its own root."""
        stack = [(value, structure, value, value, structure)]
        while stack:
            current, name, resource, root, location = stack.pop()
            for invariant in self._root.get(name, ()):
                yield invariant, current, name, resource, root, location
            members = self._spec.structures.get(name, {})
            member_invariants = self._members.get(name, {})
            for key, item in current.items():
                info = members.get(key)
                if info is None:
                    continue
                items = item if isinstance(item, list) else [item]
                for index, child in enumerate(items):
                    child_location = f"{location}.{key}[{index}]" if isinstance(item, list) else f"{location}.{key}"
                    for invariant in member_invariants.get(key, ()):
                        if invariant.key not in self._root_keys.get(info["type"], ()):  # ext-1 once, not twice
                            yield invariant, child, info["type"], resource, root, child_location
                    if not isinstance(child, dict):
                        continue
                    if info["type"] == "Resource":
                        inner_root = root if key == "contained" else child
                        stack.append((child, child.get("resourceType", ""), child, inner_root, child_location))
                    else:
                        stack.append((child, info["type"], resource, root, child_location))


__all__ = ["CoreInvariants", "Invariant", "invariants_of", "top_level_split"]
