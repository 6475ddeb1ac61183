"""The validator test corpus runner (conformance/corpus.py) on the committed subset of the
HL7 validator test cases, against a real `calipso serve`: calipso agrees with the HL7 Java
validator on every one, through `$validate` and through create."""

from __future__ import annotations

from pathlib import Path

from conformance.corpus import agreement, load_cases, run_all
from conformance.server import Served
from tests.conftest import project_root


def test_calipso_agrees_with_the_java_validator_on_the_committed_cases(tmp_path: Path) -> None:
    cases = load_cases(project_root() / "tests" / "data" / "fhir-test-cases")
    assert len(cases) == 46
    assert 10 < sum(c.java_valid for c in cases) < 25  # valid and invalid cases both
    served = Served(tmp_path / "data")
    try:
        served.wait_ready()
        results = run_all(served.base, cases)
    finally:
        served.stop()
    wrong = [(r.name, r.java_valid, r.validate_valid, r.create_valid, r.calipso_says) for r in results
             if r.validate_valid != r.java_valid or r.create_valid != r.java_valid]
    assert wrong == []
    assert agreement(results, "validate") == agreement(results, "create") == 1.0
