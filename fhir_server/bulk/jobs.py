"""An export request made a job: the steps it will run (one per type, then the deleted
resources), the patients it covers, and what its owner's token may read; then, once it has
run, the manifest that lists its files and the progress a poll reports.

A Group's patients are its members at kick-off: an empty Group exports nothing (never
"everyone"); `patient` narrows a Patient- or Group-level export to the listed patients.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict
from datetime import datetime
from typing import Any

from fhir_server.bulk.request import ExportRequest
from fhir_server.outcome import FhirError, Issue
from fhir_server.security.policy import Access
from fhir_server.spec import Spec

READ = "r"
HIDDEN_TYPES = frozenset({"Subscription"})  # kept per owner, with server-side delivery state: not notebook data


def group_members(group: dict[str, Any]) -> list[str]:
    """The ids of a Group's active Patient members."""
    found = []
    for member in group.get("member") or []:
        if not isinstance(member, dict) or member.get("inactive") is True:
            continue
        reference = (member.get("entity") or {}).get("reference", "")
        kind, _, ident = reference.partition("/")
        if kind == "Patient" and ident and "/" not in ident:
            found.append(ident)
    return sorted(set(found))


def plan_job(request: ExportRequest, access: Access, spec: Spec, present: list[str], now: datetime, url: str, base: str,
             members: list[str] | None = None) -> dict[str, Any]:
    """The job document for a kick-off (403 when the token may not read a type it names);
    `base`: the FHIR base its `_typeFilter` references are read against, at kick-off and at run."""
    notes = list(request.not_honoured)
    types = _types(request, access, spec, present, notes)
    population = _population(request, members, notes)
    steps = [{"kind": "output", "type": t} for t in types]
    if request.since is not None:
        steps += [{"kind": "deleted", "type": t} for t in types]
    until = min(request.until, now) if request.until is not None else now
    return {
        "_id": uuid.uuid4().hex,
        "owner": access.who,
        "claims": asdict(access.claims) if access.claims is not None else None,
        "level": request.level,
        "population": population,
        "steps": steps,
        "type_filters": {t: list(q) for t, q in request.type_filters.items()},
        "elements": list(request.elements),
        "since": request.since,
        "until": until,
        "transaction_time": now,
        "request": url,
        "base": base,
        "notes": notes,
        "status": "accepted",
        "created": now,
        "lease_until": None,
        "attempts": 0,
        "files": [],
        "exported": 0,
    }


def _types(request: ExportRequest, access: Access, spec: Spec, present: list[str], notes: list[str]) -> list[str]:
    compartment = spec.compartments["Patient"]
    patient_level = request.level != "system"
    if request.types is not None:
        for resource_type in request.types:
            if not access.may(resource_type, READ):
                raise FhirError(403, Issue("forbidden", f"The token's scopes do not read {resource_type}: it cannot export it"))
        chosen = list(request.types)
        outside = [t for t in chosen if patient_level and t != "Patient" and t not in compartment]
        if outside:
            text = f"{', '.join(outside)[:200]}: not in the Patient compartment, not exported by a {request.level}-level export"
            if not request.lenient:
                raise FhirError(400, Issue("not-supported", text))
            notes.append(text)
        chosen = [t for t in chosen if t not in outside]
    else:
        chosen = [t for t in present if access.may(t, READ) and t not in HIDDEN_TYPES
                  and (not patient_level or t == "Patient" or t in compartment)]
    return sorted(chosen, key=lambda t: (t != "Patient", t))


def _population(request: ExportRequest, members: list[str] | None, notes: list[str]) -> list[str] | None:
    if request.level == "system":
        return None
    if request.level == "patient":
        return sorted(request.patients) if request.patients is not None else None
    chosen = members or []
    if request.patients is not None:
        outside = [p for p in request.patients if p not in chosen]
        if outside:
            notes.append(f"{len(outside)} patient(s) named by the patient parameter are not members of the Group: not exported")
        chosen = [p for p in chosen if p in request.patients]
    return chosen


def progress(job: dict[str, Any]) -> str:
    """X-Progress: where a job stands (no patient data)."""
    if job["status"] == "accepted":
        return "queued"
    steps = job["steps"]
    step = min((job.get("position") or {}).get("step", 0), max(len(steps) - 1, 0))
    current = f", {steps[step]['kind']} {steps[step]['type']} ({step + 1} of {len(steps)} steps)" if steps else ""
    return f"{job.get('exported', 0)} resources exported{current}"[:100]


def manifest(job: dict[str, Any], base_url: str, requires_token: bool) -> dict[str, Any]:
    """The completion manifest (Bulk Data IG 2.0): what was exported, where to fetch it."""

    def listed(kind: str) -> list[dict[str, Any]]:
        return [{"type": part["type"], "url": f"{base_url}/$export-file/{job['_id']}/{part['name']}", "count": part["count"]}
                for part in job.get("files", []) if part["kind"] == kind and part["count"] > 0]

    body: dict[str, Any] = {
        "transactionTime": _instant(job["transaction_time"]),
        "request": job["request"],
        "requiresAccessToken": requires_token,
        "output": listed("output"),
        "error": listed("errors"),
    }
    if job.get("since") is not None:
        body["deleted"] = listed("deleted")
    return body


def _instant(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


__all__ = ["group_members", "manifest", "plan_job", "progress"]
