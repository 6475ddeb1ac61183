"""SMART App Launch scopes, v1 (`patient/*.read`) and v2 (`patient/Communication.cruds`), read
into what a token may do: per resource type, which interactions, and in which context.

A scope is `context/Type.permissions`:
- context `patient` (the launch patient's compartment), `user` (what the fhirUser may reach
  under the care-team policy) or `system` (a back-end integration: no compartment limit);
- Type a resource type or `*`;
- permissions v1 `read` / `write` / `*`, or v2 letters from `cruds` in that order.
A v2 query restriction (`?category=...`) narrows a scope; calipso does not apply such
restrictions yet, so a restricted scope grants nothing rather than more than it says.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

CONTEXTS = ("patient", "user", "system")
SCOPE = re.compile(r"(?P<context>patient|user|system)/(?P<type>\*|[A-Z][A-Za-z]+)\.(?P<permissions>[a-z*]+)(?P<query>\?.*)?")
V1 = {"read": "rs", "write": "cud", "*": "cruds"}
V2_ORDER = "cruds"

# The interactions of a FHIR request, as SMART v2 letters.
CREATE, READ, UPDATE, DELETE, SEARCH = "c", "r", "u", "d", "s"


def _v2_letters(permissions: str) -> str | None:
    """`cruds`-ordered letters, or None when they are not a valid v2 permission string."""
    position = -1
    for letter in permissions:
        found = V2_ORDER.find(letter, position + 1)
        if found < 0:
            return None
        position = found
    return permissions or None


@dataclass(frozen=True)
class Grant:
    """What a token's scopes allow: {context: {type or '*': letters}}."""

    rules: dict[str, dict[str, str]] = field(default_factory=dict)
    ignored: tuple[str, ...] = ()

    @classmethod
    def parse(cls, scope: str) -> "Grant":
        rules: dict[str, dict[str, str]] = {}
        ignored = []
        for item in scope.split():
            match = SCOPE.fullmatch(item)
            if match is None:
                if item not in ("openid", "fhirUser", "profile", "launch", "launch/patient", "offline_access", "online_access"):
                    ignored.append(item)
                continue
            if match["query"]:
                ignored.append(item)  # a restricted scope: not applied, so not granted
                continue
            permissions = match["permissions"]
            letters = V1.get(permissions) or _v2_letters(permissions)
            if letters is None:
                ignored.append(item)
                continue
            types = rules.setdefault(match["context"], {})
            types[match["type"]] = "".join(sorted(set(types.get(match["type"], "")) | set(letters), key=V2_ORDER.index))
        return cls(rules, tuple(ignored))

    def contexts(self) -> set[str]:
        return {context for context, types in self.rules.items() if types}

    def allows(self, context: str, resource_type: str, letter: str) -> bool:
        types = self.rules.get(context, {})
        return letter in types.get(resource_type, "") or letter in types.get("*", "")

    def allowing(self, resource_type: str, letter: str) -> list[str]:
        """The contexts (system first, then user, then patient) in which this is allowed."""
        return [c for c in ("system", "user", "patient") if self.allows(c, resource_type, letter)]


__all__ = ["CREATE", "DELETE", "Grant", "READ", "SEARCH", "UPDATE"]
