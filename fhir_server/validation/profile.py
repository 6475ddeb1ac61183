"""The profile layer: a resource checked against one of our StructureDefinition snapshots.

It runs after the structural pass, which has already held the resource to base R4
(element names, JSON kinds, base cardinality, required base codes). So a profile is compiled
into the rules its differential introduced, with their parents for navigation:
cardinality, fixed and pattern values, required bindings to our value sets, reference target
types, the types a choice element is narrowed to, slicing, and the profile's own FHIRPath
invariants. Core invariants are
`invariants.CoreInvariants`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

from fhir_server.ig import ImplementationGuide
from fhir_server.ig.snapshot import SnapshotError, choices_by_stem
from fhir_server.outcome import Issue
from fhir_server.search.references import reference_type
from fhir_server.validation.invariants import Invariant

R4_STRUCTURE = "http://hl7.org/fhir/StructureDefinition/"
UNBOUNDED = None


@dataclass
class Slicing:
    """How a repeating element's values are told apart, and the slices they fall into."""

    discriminators: list[tuple[str, str]]  # (type, path)
    closed: bool
    slices: list["Rule"] = field(default_factory=list)


@dataclass
class Rule:
    """What a profile says about one element beyond base R4."""

    element_id: str
    name: str  # JSON member name, or the stem of a choice element (`value` for value[x])
    choice: bool = False
    min: int = 0
    max: int | None = UNBOUNDED
    fixed: Any = None
    pattern: Any = None
    value_set: str | None = None  # required binding
    targets: frozenset[str] | None = None  # resource types a Reference may point at
    invariants: tuple[Invariant, ...] = ()
    children: list["Rule"] = field(default_factory=list)
    slicing: Slicing | None = None
    slice_name: str | None = None
    resource_type: str | None = None  # a resource-valued element (Bundle.entry.resource) constrained to one type
    resource_profile: str | None = None  # ... and to one of the guide's profiles, checked on the nested resource
    choice_keys: frozenset[str] | None = None  # a choice element narrowed to some types: the JSON keys allowed (valueString)
    choice_types: dict[str, str] = field(default_factory=dict)  # a choice element's JSON key -> its type (valueString -> string)

    def child(self, name: str) -> "Rule | None":
        for rule in self.children:
            if rule.name == name:
                return rule
        return None


class ProfileValidator:
    """Checks resources against our profiles; compiles each profile once."""

    def __init__(self, guide: ImplementationGuide):
        self._guide = guide
        self._compiled: dict[str, Rule] = {}

    def knows(self, url: str) -> bool:
        return url.split("|", 1)[0] in self._guide.profiles

    def profile_type(self, url: str) -> str:
        return str(self._guide.profiles[url.split("|", 1)[0]]["type"])

    def validate(self, resource: dict[str, Any], url: str) -> list[Issue]:
        """Issues of `resource` against the profile `url` (which must be one of ours)."""
        root = self._rule(url.split("|", 1)[0])
        issues: list[Issue] = []
        _Walk(self, resource, issues).check_value(root, resource, resource["resourceType"])
        return issues

    def _rule(self, url: str) -> Rule:
        if url not in self._compiled:
            self._compiled[url] = _compile(self._guide.profiles[url], self._guide)
        return self._compiled[url]

    def contains(self, value_set: str, system: str | None, code: str) -> bool | None:
        return self._guide.terminology.contains(value_set, system, code)


def _compile(profile: dict[str, Any], guide: ImplementationGuide) -> Rule:
    """The rule tree of a snapshot, pruned to the elements the differential touches."""
    elements = profile["snapshot"]["element"]
    touched = {e["id"] for e in choices_by_stem(profile["differential"]["element"], elements)}
    keep = {element_id for element_id in (e["id"] for e in elements) if _touches(element_id, touched)}
    rules: dict[str, Rule] = {}
    root: Rule | None = None
    for element in elements:
        element_id = element["id"]
        if element_id not in keep and root is not None:
            continue
        rule = _rule_of(element, profile["url"], guide)
        rules[element_id] = rule
        if root is None:
            root = rule
            continue
        parent_id, separator, _ = _split(element_id)
        parent = rules.get(parent_id)
        if parent is None:
            raise SnapshotError(f"{element_id}: parent {parent_id} is not in the snapshot")
        if separator == ":":
            if parent.slicing is None:
                raise SnapshotError(f"{element_id}: {parent_id} is not sliced")
            parent.slicing.slices.append(rule)
        else:
            parent.children.append(rule)
    assert root is not None
    return root


def _touches(element_id: str, touched: set[str]) -> bool:
    """Kept: elements of the differential and every ancestor of one (to navigate down)."""
    return any(t == element_id or t.startswith(element_id + ".") or t.startswith(element_id + ":") for t in touched)


def _split(element_id: str) -> tuple[str, str, str]:
    cut = max(element_id.rfind("."), element_id.rfind(":"))
    return element_id[:cut], element_id[cut], element_id[cut + 1 :]


def _rule_of(element: dict[str, Any], profile_url: str, guide: ImplementationGuide) -> Rule:
    name = element["path"].rsplit(".", 1)[-1]
    choice = name.endswith("[x]")
    maximum = element.get("max", "*")
    rule = Rule(
        element_id=element["id"],
        name=name[:-3] if choice else name,
        choice=choice,
        min=element.get("min", 0),
        max=UNBOUNDED if maximum == "*" else int(maximum),
        fixed=_prefixed(element, "fixed"),
        pattern=_prefixed(element, "pattern"),
        slice_name=element.get("sliceName"),
    )
    binding = element.get("binding", {})
    if binding.get("strength") == "required" and (binding.get("valueSet", "").startswith(guide.canonical)
                                                   or guide.terminology.members(binding.get("valueSet", "")) is not None):
        rule.value_set = binding["valueSet"]
    targets = {
        _profile_type(target, guide)
        for entry in element.get("type", [])
        if entry.get("code") == "Reference"
        for target in entry.get("targetProfile", [])
    }
    if targets and "Resource" not in targets:
        rule.targets = frozenset(targets)
    types = element.get("type", [])
    if choice and types:
        rule.choice_types = {rule.name + t["code"][0].upper() + t["code"][1:]: t["code"] for t in types if t.get("code")}
        rule.choice_keys = frozenset(rule.choice_types)
    if element["path"].endswith(".resource") and len(types) == 1 and types[0].get("code") not in ("Resource", None):
        rule.resource_type = types[0]["code"]
        profiles = [p for p in types[0].get("profile", []) if p in guide.profiles]
        rule.resource_profile = profiles[0] if profiles else None
    rule.invariants = tuple(
        Invariant(c["key"], c["severity"], c["human"], c["expression"], core=False)
        for c in element.get("constraint", [])
        if c.get("source") == profile_url and c.get("expression")
    )
    slicing = element.get("slicing")
    if slicing:
        rule.slicing = Slicing(
            discriminators=[(d["type"], d["path"]) for d in slicing.get("discriminator", [])],
            closed=slicing.get("rules") == "closed",
        )
    return rule


def _prefixed(element: dict[str, Any], prefix: str) -> Any:
    for key, value in element.items():
        if key.startswith(prefix) and key[len(prefix) : len(prefix) + 1].isupper():
            return value
    return None


def _profile_type(url: str, guide: ImplementationGuide) -> str:
    """The resource type a target profile constrains (one of the guide's, or base R4)."""
    profile = guide.profiles.get(url)
    if profile is not None:
        return str(profile["type"])
    if url.startswith(R4_STRUCTURE):
        return url[len(R4_STRUCTURE) :]
    raise SnapshotError(f"unknown target profile {url}")


class _Walk:
    """One validation: walks the resource along the rule tree, collecting issues."""

    def __init__(self, validator: ProfileValidator, resource: dict[str, Any], issues: list[Issue]):
        self._validator = validator
        self._resource = resource
        self._issues = issues

    def check_value(self, rule: Rule, value: Any, location: str, type_name: str | None = None) -> None:
        """Every constraint of `rule` on one value, then its children."""
        if rule.fixed is not None and value != rule.fixed:
            self._issue("value", f"must be exactly {_short(rule.fixed)}", location)
        if rule.pattern is not None and not matches_pattern(value, rule.pattern):
            self._issue("value", f"must match the pattern {_short(rule.pattern)}", location)
        if rule.value_set is not None:
            self._check_binding(rule.value_set, value, location)
        if rule.targets is not None and isinstance(value, dict):
            self._check_target(rule.targets, value, location)
        for invariant in rule.invariants:
            issue = invariant.check(value, type_name or _type_of(rule), self._resource, location)
            if issue is not None:
                self._issues.append(issue)
        if rule.resource_type is not None and isinstance(value, dict):
            self._check_resource(rule, value, location)
            return
        if isinstance(value, dict):
            for child in rule.children:
                self.check_member(child, value, location)

    def check_member(self, rule: Rule, parent: dict[str, Any], location: str) -> None:
        """Cardinality, slicing and value checks of one member of a JSON object."""
        found = list(_values(rule, parent))
        self._check_count(rule, len(found), f"{location}.{rule.name}")
        if rule.slicing is not None:
            self._check_slices(rule, found, location)
            return
        for key, index, value in found:
            member_location = _located(location, key, index)
            if rule.choice_keys is not None and key not in rule.choice_keys:
                self._issue("value", f"{key} is not allowed here: {', '.join(sorted(rule.choice_keys))}", member_location)
            self.check_value(rule, value, member_location, rule.choice_types.get(key))

    def _check_slices(self, rule: Rule, found: list[tuple[str, int | None, Any]], location: str) -> None:
        assert rule.slicing is not None
        counts = {s.slice_name: 0 for s in rule.slicing.slices}
        for key, index, value in found:
            member_location = _located(location, key, index)
            slice_rule = self._slice_of(rule.slicing, value)
            if slice_rule is None:
                if rule.slicing.closed:
                    self._issue("structure", f"matches none of the slices of {rule.element_id} (closed)", member_location)
                self.check_value(rule, value, member_location)
                continue
            counts[slice_rule.slice_name] += 1
            self.check_value(slice_rule, value, member_location)
        for slice_rule in rule.slicing.slices:
            self._check_count(slice_rule, counts[slice_rule.slice_name], f"{location}.{rule.name}", slice_rule.slice_name)

    def _slice_of(self, slicing: Slicing, value: Any) -> Rule | None:
        for slice_rule in slicing.slices:
            if all(self._discriminates(slice_rule, kind, path, value) for kind, path in slicing.discriminators):
                return slice_rule
        return None

    def _discriminates(self, slice_rule: Rule, kind: str, path: str, value: Any) -> bool:
        """Does `value` carry the value the slice fixes at `path` (value / pattern discriminators)?
        The fixed value may sit in a slice further down (`code.coding:SBPCode.code` for the
        path `code.coding.code`, as R4's blood pressure profile writes it)."""
        targets = [slice_rule]
        for step in ([] if path == "$this" else path.split(".")):
            children = [child for target in targets if (child := target.child(step)) is not None]
            targets = children + [s for child in children if child.slicing is not None for s in child.slicing.slices]
            if not targets:
                return False
        candidates = [value] if path == "$this" else list(_descend(value, path.split(".")))
        return any(self._carries(target, kind, candidates) for target in targets)

    def _carries(self, target: Rule, kind: str, candidates: list[Any]) -> bool:
        if kind in ("type", "profile"):  # the resource's type (a profile discriminator: the type its profile constrains)
            return target.resource_type is not None and any(isinstance(c, dict) and c.get("resourceType") == target.resource_type
                                                             for c in candidates)
        if target.fixed is not None:
            return any(c == target.fixed for c in candidates)
        if target.pattern is not None:
            return any(matches_pattern(c, target.pattern) for c in candidates)
        if target.value_set is not None:
            return any(self._in_value_set(target.value_set, c) for c in candidates)
        return False

    def _check_resource(self, rule: Rule, value: dict[str, Any], location: str) -> None:
        """A resource inside another (a Bundle entry's): its type, and the profile the slice asks for."""
        if value.get("resourceType") != rule.resource_type:
            self._issue("structure", f"must be a {rule.resource_type}", location)
            return
        if rule.resource_profile is not None:
            for issue in self._validator.validate(value, rule.resource_profile):
                expression = f"{location}.{issue.expression.split('.', 1)[1]}" if issue.expression and "." in issue.expression else location
                self._issues.append(Issue(issue.code, f"{location}: {issue.diagnostics}", issue.severity, expression))

    def _check_count(self, rule: Rule, count: int, location: str, slice_name: str | None = None) -> None:
        what = f"slice '{slice_name}' of {location.rsplit('.', 1)[-1]}" if slice_name else location.rsplit(".", 1)[-1]
        if count < rule.min:
            self._issue("required", f"{what}: at least {rule.min} expected, found {count}", location)
        if rule.max is not UNBOUNDED and count > rule.max:
            self._issue("structure", f"{what}: at most {rule.max} allowed, found {count}", location)

    def _check_binding(self, value_set: str, value: Any, location: str) -> None:
        verdict = self._in_value_set(value_set, value)
        if verdict is False:
            self._issue("code-invalid", f"{_short(value)} is not in the required value set {value_set}", location)

    def _in_value_set(self, value_set: str, value: Any) -> bool | None:
        if isinstance(value, str):
            return self._validator.contains(value_set, None, value)
        if isinstance(value, dict) and "coding" in value:
            verdicts = [self._in_value_set(value_set, coding) for coding in value["coding"]]
            return True if True in verdicts else (None if None in verdicts else False)
        if isinstance(value, dict) and "code" in value:
            return self._validator.contains(value_set, value.get("system"), value["code"])
        return False

    def _check_target(self, targets: frozenset[str], value: dict[str, Any], location: str) -> None:
        reference = value.get("reference")
        if not isinstance(reference, str):
            return
        target_type = reference_type(reference)
        if target_type is not None and target_type not in targets:
            allowed = ", ".join(sorted(targets))
            self._issue("value", f"must reference {allowed}, not {target_type}", location)

    def _issue(self, code: str, text: str, location: str) -> None:
        self._issues.append(Issue(code, f"{location}: {text}", expression=location))


def _values(rule: Rule, parent: dict[str, Any]) -> Iterator[tuple[str, int | None, Any]]:
    """(JSON key, index or None, value) of a member, choice elements included."""
    keys = [rule.name] if not rule.choice else [k for k in parent if k.startswith(rule.name) and k[len(rule.name) : len(rule.name) + 1].isupper()]
    for key in keys:
        item = parent.get(key)
        if item is None:
            continue
        if isinstance(item, list):
            for index, value in enumerate(item):
                yield key, index, value
        else:
            yield key, None, item


def _descend(value: Any, steps: list[str]) -> Iterator[Any]:
    if not steps:
        yield value
        return
    if not isinstance(value, dict):
        return
    item = value.get(steps[0])
    for child in item if isinstance(item, list) else ([] if item is None else [item]):
        yield from _descend(child, steps[1:])


def _located(location: str, key: str, index: int | None) -> str:
    return f"{location}.{key}" if index is None else f"{location}.{key}[{index}]"


def _type_of(rule: Rule) -> str:
    """The FHIRPath type name for invariants: the element path without slice names."""
    return ".".join(part.split(":", 1)[0] for part in rule.element_id.split("."))


def _short(value: Any) -> str:
    if isinstance(value, dict) and "code" in value:
        text = f"{value.get('system', '')}|{value['code']}"
    else:
        text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 120 else text[:117] + "..."


def matches_pattern(value: Any, pattern: Any) -> bool:
    """FHIR pattern[x]: every part of the pattern is in the value; list items match any item."""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(k in value and matches_pattern(value[k], v) for k, v in pattern.items())
    if isinstance(pattern, list):
        return isinstance(value, list) and all(any(matches_pattern(item, p) for item in value) for p in pattern)
    return value == pattern


__all__ = ["ProfileValidator", "matches_pattern"]
