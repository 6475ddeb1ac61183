"""`python -m conformance`: start a server, act as an outside EHR, check every body received.

    python -m conformance                 # starts `calipso serve` on a free port, stops it after
    python -m conformance --server URL    # against a running server (its FHIR base URL)

Prints one line per validator (bodies checked, errors) and the errors; exits 1 when a
validator found an error or a scenario step went wrong, 0 otherwise.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
from pathlib import Path

from conformance.scenario import Recorded, profiles_served, run_scenario
from conformance.server import Served
from conformance.validators import Verdict, backport_notifications, calipso_validator, cdl_profiles, hl7_java, json_schema, medplum
from fhir_server.subscriptions.receiver import Receiver

MAX_SHOWN = 20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conformance", description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default=None, help="FHIR base URL of a running server (default: start one)")
    parser.add_argument("--mllp-port", type=int, default=None, help="with --server: its MLLP port (the ADT story is sent there)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        recorded = _record(args.server, args.mllp_port, Path(work))
        package = _package(Path(work))
        verdicts = [
            json_schema(recorded.bodies),
            calipso_validator(recorded.bodies),
            cdl_profiles(recorded.bodies),
            backport_notifications(recorded.bodies),
            medplum(recorded.bodies, profiles_served(recorded)),
            hl7_java(recorded.bodies, package),
        ]
    return _report(recorded, verdicts)


def _record(server: str | None, mllp_port: int | None, work: Path) -> Recorded:
    """The scenario's bodies; the started server may notify a receiver in this process (a
    running one only when it allows the receiver's origin: otherwise that step fails)."""
    receiver = Receiver(secrets.token_urlsafe(24)).start()
    try:
        if server:
            return run_scenario(server, mllp_port, receiver)
        served = Served(work / "data", mllp=True, env={"CALIPSO_SUBSCRIPTION_ENDPOINTS": receiver.url})
        try:
            served.wait_ready()
            return run_scenario(served.base, served.mllp_port, receiver)
        finally:
            served.stop()
    finally:
        receiver.stop()


def _package(work: Path) -> Path:
    from fhir_server.ig import load_guide
    from fhir_server.ig.package import write_package

    return write_package(load_guide(), work / "package")


def _report(recorded: Recorded, verdicts: list[Verdict]) -> int:
    print(f"{len(recorded.bodies)} bodies received from the scenario")
    print(f"{'validator':<58} {'bodies':>6} {'errors':>6}")
    for verdict in verdicts:
        if verdict.skipped:
            print(f"{verdict.name:<58} {'-':>6} {'-':>6}  skipped: {verdict.skipped}")
        else:
            print(f"{verdict.name:<58} {verdict.checked:>6} {len(verdict.errors):>6}")
    for verdict in verdicts:
        for error in verdict.errors[:MAX_SHOWN]:
            print(f"  [{verdict.name.split(' ')[0]}] {error}")
    for failure in recorded.failures:
        print(f"  [scenario] {failure}")
    for skipped in recorded.skipped:
        print(f"  [skipped] {skipped}")
    failed = recorded.failures or any(v.errors for v in verdicts)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
