"""The public validator test corpus against calipso: does calipso agree with the HL7 Java
validator on what is valid R4?

    python -m conformance.corpus --cases PATH [--server URL] [--only NAME ...] [--json OUT]

PATH is a local copy of the `FHIR/fhir-test-cases` repository (or a folder laid out like it:
`validator/manifest.json`, the case files in `validator/`, the Java validator's expected
outcomes in `validator/outcomes/`). Nothing is fetched. Without `--server`, a `calipso serve`
is started on a free port with its own data dir (auth off) and stopped after.

The cases run are the self-contained R4 JSON ones (`SELF_CONTAINED` below says which). Each is
sent twice: to `POST [base]/[type]/$validate` (valid: no error or fatal issue) and to
`POST [base]/[type]` (valid: 201). The Java validator's expected outcome is valid when it
has no error or fatal issue. Prints the agreement and the confusion matrix of each mode and
every disagreement; exits 0 (it measures, it does not judge).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

import httpx

from conformance.server import Served

BLOCKING = ("error", "fatal")
FHIR_JSON = "application/fhir+json"
# Manifest keys that make a case depend on something outside the resource itself: another
# package or resource, a profile, a logical model, a matchetype template, or a terminology
# server (the tx modules).
NEEDS_MORE = ("packages", "supporting", "supporting5", "profiles", "profile", "logical", "package-map", "fetcher", "ips", "matchetype")
NEEDS_TERMINOLOGY_SERVER = ("tx", "tx-advanced")


@dataclass(frozen=True)
class Case:
    name: str
    file: Path
    module: str
    java_valid: bool
    java_errors: tuple[str, ...]


@dataclass
class Result:
    name: str
    module: str
    java_valid: bool
    validate_valid: bool | None  # None: the call itself failed (5xx, transport)
    create_valid: bool | None
    calipso_says: str  # the first blocking issue calipso gave, or the status
    java_says: str


def self_contained(case: dict[str, Any]) -> bool:
    """R4, JSON, used, and needing nothing but the resource and the core specification."""
    return (
        case.get("version") == "4.0"
        and str(case.get("file", "")).endswith(".json")
        and case.get("use-test", True) is not False
        and bool(case.get("java"))
        and case.get("module") not in NEEDS_TERMINOLOGY_SERVER
        and not any(case.get(key) for key in NEEDS_MORE)
    )


def load_cases(root: Path, only: Iterable[str] = ()) -> list[Case]:
    """The self-contained R4 JSON cases of the corpus at `root`, with the Java expectation."""
    validator = root / "validator"
    manifest = json.loads((validator / "manifest.json").read_text(encoding="utf-8"))
    wanted = set(only)
    cases = []
    for entry in manifest["test-cases"]:
        if not self_contained(entry) or (wanted and entry["name"] not in wanted):
            continue
        errors = _java_errors(validator, entry["java"])
        if errors is None:
            continue
        cases.append(Case(entry["name"], validator / entry["file"], entry.get("module") or "(default)", not errors, errors))
    return cases


def _java_errors(validator: Path, java: str | dict[str, Any]) -> tuple[str, ...] | None:
    """The Java validator's blocking issues: an OperationOutcome file under outcomes/, or (older
    cases) an inline `{errorCount, output}`; None when the expectation is missing."""
    if isinstance(java, dict):
        errors = tuple(line for line in java.get("output", []) if line.startswith(("ERROR", "FATAL")))
        return errors or (("(errors counted, none written)",) if java.get("errorCount") else ())
    outcome_file = validator / "outcomes" / java
    if not outcome_file.exists():
        return None
    outcome = json.loads(outcome_file.read_text(encoding="utf-8"))
    return tuple(_text(i) for i in outcome.get("issue", []) if i.get("severity") in BLOCKING)


def run_case(client: httpx.Client, base: str, case: Case) -> Result:
    body = case.file.read_bytes()
    resource_type = _resource_type(body)
    validated = _post(client, f"{base}/{resource_type}/$validate", body)
    created = _post(client, f"{base}/{resource_type}", body)
    validate_valid, validate_says = _validate_verdict(validated)
    create_valid, create_says = _create_verdict(created)
    says = validate_says if validate_valid is False else create_says if create_valid is False else validate_says
    return Result(case.name, case.module, case.java_valid, validate_valid, create_valid, says,
                  case.java_errors[0] if case.java_errors else "valid")


def run_all(base: str, cases: list[Case]) -> list[Result]:
    with httpx.Client(timeout=60) as client:
        return [run_case(client, base, case) for case in cases]


def report(results: list[Result], out: Any = sys.stdout) -> None:
    total = len(results)
    print(f"# calipso against the HL7 Java validator: {total} self-contained R4 JSON cases", file=out)
    for mode in ("validate", "create"):
        matrix = Counter((r.java_valid, getattr(r, f"{mode}_valid")) for r in results)
        agree = matrix[(True, True)] + matrix[(False, False)]
        print(f"\n{mode}: agreement {agree}/{total} = {100 * agree / max(total, 1):.1f} %", file=out)
        print(f"  java valid,   calipso valid {matrix[(True, True)]:>4}   calipso invalid {matrix[(True, False)]:>4}"
              f"   call failed {matrix[(True, None)]:>3}", file=out)
        print(f"  java invalid, calipso valid {matrix[(False, True)]:>4}   calipso invalid {matrix[(False, False)]:>4}"
              f"   call failed {matrix[(False, None)]:>3}", file=out)
    disagreements = [r for r in results if r.validate_valid != r.java_valid or r.create_valid != r.java_valid]
    print(f"\ndisagreements: {len(disagreements)}", file=out)
    for r in disagreements:
        verdict = "valid" if r.java_valid else "invalid"
        print(f"- {r.name} [{r.module}] java {verdict}; $validate {_word(r.validate_valid)}, create {_word(r.create_valid)}"
              f"\n    calipso: {r.calipso_says[:160]}\n    java:    {r.java_says[:160]}", file=out)


def agreement(results: list[Result], mode: str) -> float:
    return sum(getattr(r, f"{mode}_valid") == r.java_valid for r in results) / max(len(results), 1)


# -- one call's verdict -------------------------------------------------------------------


def _post(client: httpx.Client, url: str, body: bytes) -> httpx.Response | None:
    try:
        return client.post(url, content=body, headers={"Content-Type": FHIR_JSON, "Accept": FHIR_JSON})
    except httpx.TransportError:
        return None


def _validate_verdict(response: httpx.Response | None) -> tuple[bool | None, str]:
    if response is None or response.status_code >= 500:
        return None, _status(response)
    if response.status_code != 200:
        return False, _first_blocking(response) or _status(response)
    blocking = _first_blocking(response)
    return blocking is None, blocking or "valid"


def _create_verdict(response: httpx.Response | None) -> tuple[bool | None, str]:
    if response is None or response.status_code >= 500:
        return None, _status(response)
    if response.status_code == 201:
        return True, "201"
    return False, _first_blocking(response) or _status(response)


def _first_blocking(response: httpx.Response) -> str | None:
    try:
        outcome = response.json()
    except ValueError:
        return None
    for issue in outcome.get("issue", []) if isinstance(outcome, dict) else []:
        if issue.get("severity") in BLOCKING:
            return _text(issue)
    return None


def _text(issue: dict[str, Any]) -> str:
    where = ", ".join(issue.get("expression") or issue.get("location") or [])
    said = (issue.get("details") or {}).get("text") or issue.get("diagnostics") or issue.get("code", "")
    return f"{said} ({where})" if where else str(said)


def _status(response: httpx.Response | None) -> str:
    return "no answer" if response is None else f"HTTP {response.status_code}"


def _word(valid: bool | None) -> str:
    return {True: "valid", False: "invalid", None: "FAILED"}[valid]


def _resource_type(body: bytes) -> str:
    """The type named by the body, else Basic (an unreadable body is then refused as it is)."""
    try:
        parsed = json.loads(body.decode("utf-8-sig"))
    except (ValueError, UnicodeDecodeError):
        return "Basic"
    kind = parsed.get("resourceType") if isinstance(parsed, dict) else None
    return kind if isinstance(kind, str) and kind.isalpha() else "Basic"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conformance.corpus", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=Path, required=True, help="a local copy of FHIR/fhir-test-cases")
    parser.add_argument("--server", default=None, help="FHIR base URL of a running server (default: start one)")
    parser.add_argument("--only", nargs="*", default=(), help="run these cases only (manifest names)")
    parser.add_argument("--json", type=Path, default=None, help="also write every result here")
    args = parser.parse_args(argv)
    cases = load_cases(args.cases, args.only)
    if args.server:
        results = run_all(args.server.rstrip("/"), cases)
    else:
        with tempfile.TemporaryDirectory() as work:
            served = Served(Path(work) / "data")
            try:
                served.wait_ready()
                results = run_all(served.base, cases)
            finally:
                served.stop()
    report(results)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1, ensure_ascii=False), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
