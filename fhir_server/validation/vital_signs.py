"""R4's vital signs profiles (fhir_server/spec/vital-signs/, copied from R4's definitions).

R4 ("Vital Signs"): an Observation whose code is one of the vital signs' LOINC codes SHALL
conform to the matching profile. So an Observation is held to a vital signs profile when it
claims one in `meta.profile`, when its `code` carries the profile's LOINC code, or when it carries
a SNOMED CT concept naming the same observable (as the HL7 Java validator does: a temperature
coded in SNOMED CT alone lacks the LOINC code the profile requires). A profile is checked with
the profiles it derives from (`bodytemp`, then `vitalsigns`).
"""

from __future__ import annotations

from functools import cache
from typing import Any, Iterator

import orjson

from fhir_server.ig import ImplementationGuide, load_package_folder
from fhir_server.outcome import Issue
from fhir_server.spec import VITAL_SIGNS_DIR
from fhir_server.validation.profile import ProfileValidator

LOINC = "http://loinc.org"
SNOMED_CT = "http://snomed.info/sct"


class VitalSigns:
    """Which vital signs profiles an Observation is held to, and its issues against them."""

    def __init__(self, guide: ImplementationGuide):
        self._guide = guide
        self._validator = ProfileValidator(guide)
        self._by_code = {LOINC: _codes("loinc.json"), SNOMED_CT: _codes("snomed-ct.json")}

    def knows(self, url: str) -> bool:
        return self._validator.knows(url)

    def required(self, resource: dict[str, Any], claimed: list[str]) -> list[str]:
        """The profiles `resource` must conform to: those it claims and those its code calls for."""
        urls = [url.split("|", 1)[0] for url in claimed if self.knows(url)]
        urls += [url for url in self._called_for(resource) if url not in urls]
        return urls

    def check(self, resource: dict[str, Any], urls: list[str]) -> list[Issue]:
        issues: list[Issue] = []
        checked: set[str] = set()
        for url in urls:
            for profile in self._lineage(url):
                if profile not in checked:
                    checked.add(profile)
                    issues.extend(self._validator.validate(resource, profile))
        return issues

    def _called_for(self, resource: dict[str, Any]) -> Iterator[str]:
        code = resource.get("code") if resource.get("resourceType") == "Observation" else None
        for coding in code.get("coding", []) if isinstance(code, dict) and isinstance(code.get("coding"), list) else []:
            if isinstance(coding, dict):
                url = self._by_code.get(str(coding.get("system")), {}).get(str(coding.get("code")))
                if url is not None:
                    yield url

    def _lineage(self, url: str) -> Iterator[str]:
        """The profile, then the vital signs profiles it derives from."""
        while url in self._guide.profiles:
            yield url
            url = self._guide.profiles[url].get("baseDefinition", "")


@cache
def _codes(name: str) -> dict[str, str]:
    table = orjson.loads((VITAL_SIGNS_DIR / name).read_bytes())
    return {code: url for code, url in table.items() if not code.startswith("_")}


@cache
def vital_signs() -> VitalSigns:
    return VitalSigns(load_package_folder(VITAL_SIGNS_DIR))


__all__ = ["VitalSigns", "vital_signs"]
