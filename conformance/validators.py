"""The validators the harness runs over every body: each returns a Verdict.

(1) the official R4 JSON Schema, (2) calipso's own validator with our profiles,
(3) @medplum/core's validateResource in Node (installed here with npm from the committed
lock file), (4) the HL7 Java validator when FHIR_VALIDATOR_JAR names its jar.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conformance.schema import schema_errors

MEDPLUM_DIR = Path(__file__).resolve().with_name("medplum")
BLOCKING = ("error", "fatal")
Bodies = list[tuple[str, dict[str, Any]]]


@dataclass
class Verdict:
    """One validator's result: how many bodies it checked and what it found wrong."""

    name: str
    checked: int = 0
    errors: list[str] = field(default_factory=list)
    skipped: str | None = None


def json_schema(bodies: Bodies) -> Verdict:
    verdict = Verdict("R4 JSON Schema (official, draft-06)")
    for label, body in bodies:
        verdict.checked += 1
        verdict.errors.extend(f"{label}: {error}" for error in schema_errors(body))
    return verdict


def calipso_validator(bodies: Bodies) -> Verdict:
    """Ours: structure, core invariants, and every profile of ours a resource claims."""
    from fhir_server.ig import load_guide
    from fhir_server.spec import load_spec
    from fhir_server.validation import Validator

    validator = Validator(load_spec(), load_guide())
    verdict = Verdict("calipso validator (R4 + our profiles)")
    for label, body in bodies:
        verdict.checked += 1
        members = [e["resource"] for e in body.get("entry", []) if "resource" in e] if body.get("resourceType") == "Bundle" else []
        for resource in [body] + members:
            resource_type = str(resource.get("resourceType"))
            issues = validator.validate_all(resource, resource_type)
            verdict.errors.extend(
                f"{label}: {resource_type} {i.expression or ''}: {i.diagnostics}" for i in issues if i.severity in BLOCKING
            )
    return verdict


def cdl_profiles(bodies: Bodies) -> Verdict:
    """What the Cahier de liaison base serves, against the CdL definitions calipso carries
    (fhir_server/national/cdl: CdLDocumentReference, the search result Bundle)."""
    from fhir_server.national.cdl_view import view_table
    from fhir_server.rest.cdl import cdl_validator

    profiles = view_table()["profiles"]
    verdict = Verdict("ANS Cahier de liaison profiles (CdL base)")
    for label, body in bodies:
        if not label.startswith("cdl: "):
            continue
        profile = profiles["document"] if body.get("resourceType") == "DocumentReference" else (
            profiles["searchset"] if body.get("resourceType") == "Bundle" and body.get("type") == "searchset" else None)
        if profile is None:
            continue
        verdict.checked += 1
        verdict.errors.extend(f"{label}: {i.expression or ''}: {i.diagnostics}" for i in cdl_validator().validate(body, profile)
                              if i.severity in BLOCKING)
    return verdict


def backport_notifications(bodies: Bodies) -> Verdict:
    """Notifications (as received, and as `$events` gives them again) against the Backport IG's
    R4 notification profile; `$status` answers' SubscriptionStatus against its status profile
    (the definitions calipso carries: fhir_server/subscriptions/backport, NOTICE)."""
    from fhir_server.subscriptions.profiles import notification_issues, status_issues

    verdict = Verdict("Subscriptions Backport IG notification profiles")
    for label, body in bodies:
        if label.startswith("notification ") or "$events" in label:
            issues = notification_issues(body)
        elif "$status" in label and body.get("resourceType") == "Bundle":
            issues = [i for e in body.get("entry", []) for i in status_issues(e.get("resource", {}))]
        else:
            continue
        verdict.checked += 1
        verdict.errors.extend(f"{label}: {i.expression or ''}: {i.diagnostics}" for i in issues)
    return verdict


def medplum(bodies: Bodies, profiles: list[dict[str, Any]]) -> Verdict:
    """@medplum/core in Node: base R4 for every body, our profiles for resources that claim them."""
    verdict = Verdict("@medplum/core validateResource (Node)")
    if shutil.which("node") is None or shutil.which("npm") is None:
        verdict.skipped = "node and npm are not installed"
        return verdict
    _install_medplum()
    with tempfile.TemporaryDirectory() as work:
        bodies_path, profiles_path = Path(work) / "bodies.json", Path(work) / "profiles.json"
        bodies_path.write_text(json.dumps([{"label": label, "body": body} for label, body in bodies]))
        profiles_path.write_text(json.dumps(profiles))
        done = subprocess.run(
            ["node", str(MEDPLUM_DIR / "validate.mjs"), str(bodies_path), str(profiles_path)],
            capture_output=True, text=True, timeout=600, cwd=MEDPLUM_DIR,
        )
    if done.returncode != 0:
        verdict.errors.append(f"node failed: {done.stderr[-2000:]}")
        return verdict
    report = json.loads(done.stdout)
    verdict.checked = report["checked"]
    verdict.name += f", {report['profileChecks']} profile checks"
    verdict.errors.extend(
        f"{e['label']}: {e.get('profile', 'R4')} {e['expression']}: {e['text']}" for e in report["errors"]
    )
    return verdict


def _install_medplum() -> None:
    """npm ci from the committed lock file, once (node_modules is not committed)."""
    marker = MEDPLUM_DIR / "node_modules" / "@medplum" / "core" / "package.json"
    if marker.exists():
        return
    done = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        capture_output=True, text=True, timeout=600, cwd=MEDPLUM_DIR,
    )
    if done.returncode != 0:
        raise RuntimeError(f"npm ci failed in {MEDPLUM_DIR}:\n{done.stderr[-2000:]}")


def hl7_java(bodies: Bodies, package: Path | None) -> Verdict:
    """The HL7 validator jar, with our package as `-ig`, when FHIR_VALIDATOR_JAR is set."""
    verdict = Verdict("HL7 Java validator")
    jar = os.environ.get("FHIR_VALIDATOR_JAR")
    if not jar:
        verdict.skipped = "FHIR_VALIDATOR_JAR is not set"
        return verdict
    with tempfile.TemporaryDirectory() as work:
        for index, (_, body) in enumerate(bodies):
            (Path(work) / f"body-{index:04d}.json").write_text(json.dumps(body))
        output = Path(work) / "outcome.json"
        command = ["java", "-jar", jar, *sorted(str(p) for p in Path(work).glob("body-*.json")), "-version", "4.0.1", "-output", str(output)]
        if package is not None:
            command += ["-ig", str(package)]
        subprocess.run(command, capture_output=True, text=True, timeout=3600)
        if not output.exists():
            verdict.errors.append("the validator wrote no output")
            return verdict
        result = json.loads(output.read_text())
    outcomes = [e["resource"] for e in result.get("entry", [])] if result.get("resourceType") == "Bundle" else [result]
    verdict.checked = len(bodies)
    labels = [label for label, _ in bodies]
    for index, outcome in enumerate(outcomes):
        for issue in outcome.get("issue", []):
            if issue.get("severity") in BLOCKING:
                where = labels[index] if index < len(labels) else f"body {index}"
                verdict.errors.append(f"{where}: {issue.get('expression', [''])[0]}: {issue.get('details', {}).get('text', '')}")
    return verdict


__all__ = ["Verdict", "calipso_validator", "hl7_java", "json_schema", "medplum"]
