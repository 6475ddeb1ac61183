"""Resource validation: structural (base R4), core FHIRPath invariants, and our profiles.

Writes always get the structural pass, the core extensions' rules and the core R4 invariants
(errors); a resource whose
`meta.profile` names one of our profiles also gets that profile; with `enforce_profiles`, a
resource of a type our guide profiles must name one. `$validate` runs everything and also
reports warnings.
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


BLOCKING = ("error", "fatal")


class Validator:
    """Every validation layer, configured once per engine."""

    def __init__(self, spec: Spec, guide: ImplementationGuide, enforce_profiles: bool = False):
        self.structural = StructuralValidator(spec)
        self.extensions = ExtensionChecker(spec)
        self.invariants = CoreInvariants(spec)
        self.definitions = DefinitionChecker(spec)
        self.profiles = ProfileValidator(guide)
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
        return [i for i in self._deep(resource, resource_type, claimed) if i.severity in BLOCKING]

    def validate_all(self, resource: Any, resource_type: str, profile: str | None = None) -> list[Issue]:
        """Everything `$validate` reports: errors, warnings, and which profiles were checked."""
        issues = self.structural.validate(resource, resource_type)
        if issues:
            return issues
        claimed = [profile] if profile else self.claimed_profiles(resource)
        unknown = [url for url in claimed if not self.profiles.knows(url)]
        if unknown:
            return [Issue("not-found", f"Unknown profile {url}", expression=f"{resource_type}.meta.profile") for url in unknown]
        return self._deep(resource, resource_type, claimed)

    def claimed_profiles(self, resource: dict[str, Any]) -> list[str]:
        """Our profiles among `meta.profile` (others cannot be checked here and are left alone)."""
        meta = resource.get("meta")
        declared = meta.get("profile", []) if isinstance(meta, dict) else []
        return [url for url in declared if isinstance(url, str) and self.profiles.knows(url)]

    def _deep(self, resource: dict[str, Any], resource_type: str, profiles: list[str]) -> list[Issue]:
        issues = (self.extensions.check(resource, resource_type) + self.invariants.check(resource, resource_type)
                  + self.definitions.check(resource, resource_type) + cross_reference_issues(resource, resource_type))
        for url in profiles:
            if self.profiles.profile_type(url) != resource_type:
                issues.append(Issue("invalid", f"Profile {url} is for {self.profiles.profile_type(url)}, not {resource_type}", expression=f"{resource_type}.meta.profile"))
                continue
            issues.extend(self.profiles.validate(resource, url))
        return issues


__all__ = ["CoreInvariants", "ProfileValidator", "StructuralValidator", "Validator"]
