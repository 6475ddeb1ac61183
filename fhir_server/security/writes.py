"""Which writes a token may make, proved on the patients a resource is filed under (its Patient
compartments, read from its reference index entries), before the write and after it.

For a token limited to some patients (a practitioner, a patient, a caregiver):
1. **Inside, before and after.** Every patient a resource of a compartment type is filed under
   must be one the token reaches, and there must be at least one: what a write replaces or
   deletes, and what it leaves. A resource cannot be written into a notebook the token does not
   reach (a `recipient` it reaches does not make up for a `subject` it does not), nor moved or
   hidden out of one.
2. **Granting is a right of its own.** Writes that decide who reaches whom need more than
   reach: CareTeam and RelatedPerson only from a participant of every patient concerned whose
   role there coordinates the circle (coordinating-roles.json), before and after;
   PractitionerRole, Group, and a Patient with `link`s only from `system/` scopes. A Consent
   can only take access away (security/objection.py): anyone who reaches the patient may record
   one, but only the patient may change or withdraw it, since that can give access back.
3. **Absent and unreachable look alike.** What a token cannot replace answers 404, as for a
   resource that does not exist; so such tokens do not create with a client-chosen id (PUT to
   a new id), which would tell a taken id from a free one. They create with POST.

Unrestricted access (`system/` scopes, authentication off, the server's own work) passes.
"""

from __future__ import annotations

from typing import Iterable

from fhir_server.outcome import FhirError, Issue
from fhir_server.security.policy import OWNED_TYPES, Access
from fhir_server.values import SEPARATOR

GRANTED_BY_COORDINATORS = frozenset({"CareTeam", "RelatedPerson"})
GRANTED_BY_SYSTEM = frozenset({"PractitionerRole", "Group"})
OBJECTIONS = frozenset({"Consent"})  # recorded by anyone who reaches the patient, changed by the patient only
LINK = "link" + SEPARATOR


def not_known(resource_type: str, resource_id: str) -> FhirError:
    """The one answer for what does not exist and what the token may not replace."""
    return FhirError(404, Issue("not-found", f"{resource_type}/{resource_id[:64]} is not known"))


def filed_under(resource_type: str, resource_id: str, references: Iterable[str],
                compartments: dict[str, list[str]]) -> frozenset[str] | None:
    """The patients a resource with these reference entries is filed under; None for a type
    outside the Patient compartment (Practitioner, Organization, ...)."""
    codes = compartments.get(resource_type)
    if codes is None and resource_type != "Patient":
        return None
    prefixes = tuple(f"{code}{SEPARATOR}Patient/" for code in codes or ())
    patients = {ref.rsplit("/", 1)[1] for ref in references if ref.startswith(prefixes)}
    if resource_type == "Patient":
        patients.add(resource_id)
    return frozenset(patients)


def check_replaceable(access: Access, resource_type: str, resource_id: str, references: list[str] | None,
                      compartments: dict[str, list[str]]) -> None:
    """Before an update or delete of the stored version (`references` None: there is none)."""
    if access.patients is None:
        return
    if references is None:
        raise not_known(resource_type, resource_id)
    if resource_type in OWNED_TYPES:
        if access.owner_entry not in references:
            raise not_known(resource_type, resource_id)  # another user's: as if it did not exist
        return
    patients = filed_under(resource_type, resource_id, references, compartments)
    if patients is not None and (not patients or not patients <= access.patients):
        raise not_known(resource_type, resource_id)
    if access.masked(resource_type, references):
        raise not_known(resource_type, resource_id)  # hidden from this user by its visibility label
    if resource_type in OBJECTIONS and not (patients and all(access.who == f"Patient/{p}" for p in patients)):
        raise _forbidden("Only the patient may change or withdraw a Consent (it may give access back)")
    _check_granting(access, resource_type, references, patients)


def check_written(access: Access, resource_type: str, resource_id: str, references: list[str],
                  compartments: dict[str, list[str]]) -> None:
    """The version about to be committed."""
    if access.patients is None:
        return
    patients = filed_under(resource_type, resource_id, references, compartments)
    if patients is not None and (not patients or not patients <= access.patients):
        raise _forbidden(f"This {resource_type} would be filed under a patient this token does not reach")
    _check_granting(access, resource_type, references, patients)


def check_absent(access: Access, resource_type: str, resource_id: str) -> None:
    """Before a PUT that would create under the client's id, or a DELETE of what is not there:
    unrestricted access only (rule 3); for others, the answer of what they may not replace."""
    if access.patients is not None:
        raise not_known(resource_type, resource_id)


def _check_granting(access: Access, resource_type: str, references: list[str], patients: frozenset[str] | None) -> None:
    if resource_type in GRANTED_BY_SYSTEM or (resource_type == "Patient" and any(r.startswith(LINK) for r in references)):
        raise _forbidden(f"Changing who reaches a patient through a {resource_type} needs a system/ scope")
    if resource_type in GRANTED_BY_COORDINATORS and not (patients and patients <= access.coordinates):
        raise _forbidden(f"Only a coordinating member of the patient's care team may change a {resource_type}")


def _forbidden(text: str) -> FhirError:
    return FhirError(403, Issue("forbidden", text))


__all__ = ["check_absent", "check_replaceable", "check_written", "filed_under", "not_known"]
