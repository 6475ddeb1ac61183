"""`calipso doctor` against a real database: the embedded SecantusDB (a standalone server) and
a port where nothing listens."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from conformance.server import free_port

CALIPSO = [sys.executable, "-m", "fhir_server.cli"]


def doctor(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALIPSO_")}
    return subprocess.run([*CALIPSO, "doctor", *args], capture_output=True, text=True, timeout=120, env=env)


def test_the_embedded_database_passes_all_but_the_replica_set_check(database_uri: str) -> None:
    done = doctor("--mongodb-uri", database_uri, "--database", "doctor_probe")
    verdicts = {line.split()[1]: line.split()[0] for line in done.stdout.splitlines() if line.strip()}
    assert verdicts["reachable"] == "OK" and verdicts["version"] == "OK"
    assert verdicts["durable"] == "OK" and verdicts["transactions"] == "OK"  # "durable writes"
    assert verdicts["topology"] == "FAIL" and "replica set" in done.stdout  # SecantusDB runs standalone
    assert verdicts["indexes"] == "WARN"  # a fresh database: calipso would create them at start
    assert done.returncode == 1 and "Traceback" not in done.stderr


def test_an_unreachable_database_is_one_clear_failure() -> None:
    done = doctor("--mongodb-uri", f"mongodb://127.0.0.1:{free_port()}/?serverSelectionTimeoutMS=500&directConnection=true")
    assert done.returncode == 1
    assert done.stdout.split()[:2] == ["FAIL", "reachable"] and "Traceback" not in done.stderr
    without = doctor()
    assert without.returncode == 2 and "--mongodb-uri" in without.stderr


async def test_a_database_calipso_started_on_has_its_indexes(app: Any, settings: Any) -> None:
    """The app fixture ran calipso's start-up on `settings.database`: every index is there."""
    import asyncio

    done = await asyncio.to_thread(doctor, "--mongodb-uri", settings.mongodb_uri, "--database", settings.database)
    assert next(line for line in done.stdout.splitlines() if line.split()[1] == "indexes").startswith("OK")
