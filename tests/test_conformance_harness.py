"""The conformance harness: a real server, the EHR scenario, three validators (CI runs all three)."""

from __future__ import annotations

import re
import subprocess
import sys

from conformance.validators import calipso_validator, cdl_profiles, json_schema, medplum
from fhir_server.ig import load_guide
from tests.conftest import project_root

BROKEN_PATIENT = {"resourceType": "Patient", "active": "yes"}


def test_each_validator_catches_a_broken_body() -> None:
    assert json_schema([("broken", BROKEN_PATIENT)]).errors
    empty_link = {"resourceType": "Bundle", "type": "batch-response", "link": []}
    assert json_schema([("empty link", empty_link)]).errors == []  # the schema has no minItems…
    assert calipso_validator([("empty link", empty_link)]).errors  # …our validator does
    profiles = list(load_guide().profiles.values())
    ack = {"resourceType": "Communication", "meta": {"profile": [f"{load_guide().canonical}/StructureDefinition/notebook-acknowledgement"]},
           "status": "completed", "subject": {"reference": "Patient/p"}}
    found = medplum([("broken", BROKEN_PATIENT), ("ack", ack)], profiles)
    assert found.checked == 2
    assert any(e.startswith("broken: R4") for e in found.errors)
    assert any("notebook-acknowledgement" in e and "inResponseTo" in e for e in found.errors)
    note = {"resourceType": "DocumentReference", "status": "current", "content": [{"attachment": {"contentType": "text/plain"}}]}
    cdl = cdl_profiles([("cdl: GET DocumentReference/x -> 200", note), ("GET Patient/x -> 200", BROKEN_PATIENT)])
    assert cdl.checked == 1 and any("subject" in e for e in cdl.errors)  # CdLDocumentReference needs type, subject, author


def test_medplum_accepts_every_example_against_its_profile() -> None:
    guide = load_guide()
    found = medplum([(f"{e['resourceType']}/{e['id']}", e) for e in guide.examples], list(guide.profiles.values()))
    assert found.checked == len(guide.examples) == 8
    assert found.errors == []
    assert "8 profile checks" in found.name


def test_the_harness_runs_the_scenario_with_no_errors() -> None:
    done = subprocess.run([sys.executable, "-m", "conformance"], capture_output=True, text=True, timeout=900, cwd=project_root())
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {line[:58].strip(): line[58:].split() for line in done.stdout.splitlines() if re.search(r"\s\d+\s+\d+$", line)}
    assert len(rows) == 5, done.stdout
    for name, (bodies, errors) in rows.items():
        least = 3 if "Cahier de liaison" in name else 4 if "Backport" in name else 25  # notifications, $status, $events
        assert int(bodies) >= least and errors == "0", name
    assert "skipped: FHIR_VALIDATOR_JAR is not set" in done.stdout
    assert "[scenario]" not in done.stdout and "ADT ingestion" not in done.stdout  # the French ADT story ran
