"""Resource validation: structural (base R4), core FHIRPath invariants, our profiles and R4's
vital signs profiles.

Writes always get the structural pass, the core extensions' rules, the core R4 invariants and
the checks across a resource's parts (errors); a resource whose `meta.profile` names one of our
profiles also gets that profile; an Observation claiming a vital signs profile, or coded as
one, gets it (R4: it SHALL conform); with `enforce_profiles`, a resource of a type our guide
profiles must name one. `$validate` runs everything and also reports warnings.
"""

from __future__ import annotations

from typing import Any

from fhir_server.ig import ImplementationGuide
from fhir_server.outcome import Issue
from fhir_server.spec import Spec
from fhir_server.validation.cross_references import cross_reference_issues
from fhir_server.validation.definitions import DefinitionChecker
from fhir_server.validation.extensions import ExtensionChecker
from fhir_server.validation.invariants import CoreInvariants
from fhir_server.validation.profile import ProfileValidator
from fhir_server.validation.structural import StructuralValidator
from fhir_server.validation.vital_signs import vital_signs


BLOCKING = ("error", "fatal")


class Validator:
    """Every validation layer, configured once per engine."""

    def __init__(self, spec: Spec, guide: ImplementationGuide, enforce_profiles: bool = False):
        self.structural = StructuralValidator(spec)
        self.extensions = ExtensionChecker(spec)
        self.invariants = CoreInvariants(spec)
        self.definitions = DefinitionChecker(spec)
        self.profiles = ProfileValidator(guide)
        self.vital_signs = vital_signs()
        self._guide = guide
        self._enforce = enforce_profiles
        self._profiled_types = frozenset(sd["type"] for sd in guide.profiles.values())

    def validate_write(self, resource: Any, resource_type: str) -> list[Issue]:
        """Blocking issues for a create or update (errors only)."""
        issues = self.structural.validate(resource, resource_type)
        if issues:
            return issues
        claimed = self.claimed_profiles(resource)
        if not claimed and self._enforce and resource_type in self._profiled_types:
            wanted = ", ".join(sorted(self._guide.profiles_for(resource_type)))
            return [Issue("required", f"meta.profile must name one of: {wanted}", expression=f"{resource_type}.meta.profile")]
        return [i for i in self._deep(resource, resource_type, claimed, _declared(resource)) if i.severity in BLOCKING]

    def validate_all(self, resource: Any, resource_type: str, profile: str | None = None) -> list[Issue]:
        """Everything `$validate` reports: errors, warnings, and which profiles were checked."""
        issues = self.structural.validate(resource, resource_type)
        if issues:
            return issues
        if profile is None:
            return self._deep(resource, resource_type, self.claimed_profiles(resource), _declared(resource))
        if self.profiles.knows(profile):
            return self._deep(resource, resource_type, [profile], [])
        if self.vital_signs.knows(profile):
            return self._deep(resource, resource_type, [], [profile])
        return [Issue("not-found", f"Unknown profile {profile}", expression=f"{resource_type}.meta.profile")]

    def knows_profile(self, url: str) -> bool:
        """One of our guide's profiles, or one of R4's vital signs profiles."""
        return self.profiles.knows(url) or self.vital_signs.knows(url)

    def claimed_profiles(self, resource: dict[str, Any]) -> list[str]:
        """Our profiles among `meta.profile` (others cannot be checked here and are left alone)."""
        return [url for url in _declared(resource) if self.profiles.knows(url)]

    def _deep(self, resource: dict[str, Any], resource_type: str, ours: list[str], declared: list[str]) -> list[Issue]:
        """Everything past the structural pass: `ours`, the guide's profiles to check; `declared`,
        the profiles named otherwise (R4's vital signs ones among them are checked)."""
        issues = (self.extensions.check(resource, resource_type) + self.invariants.check(resource, resource_type)
                  + self.definitions.check(resource, resource_type) + cross_reference_issues(resource, resource_type))
        for url in ours:
            if self.profiles.profile_type(url) != resource_type:
                issues.append(Issue("invalid", f"Profile {url} is for {self.profiles.profile_type(url)}, not {resource_type}", expression=f"{resource_type}.meta.profile"))
                continue
            issues.extend(self.profiles.validate(resource, url))
        vital = self.vital_signs.required(resource, declared)
        if vital and resource_type != "Observation":
            return issues + [Issue("invalid", f"Profile {url} is for Observation, not {resource_type}", expression=f"{resource_type}.meta.profile")
                             for url in vital]
        return issues + self.vital_signs.check(resource, vital)


def _declared(resource: dict[str, Any]) -> list[str]:
    meta = resource.get("meta")
    declared = meta.get("profile", []) if isinstance(meta, dict) else []
    return [url for url in declared if isinstance(url, str)] if isinstance(declared, list) else []


__all__ = ["CoreInvariants", "ProfileValidator", "StructuralValidator", "Validator"]
