"""Security overhead: the same reads with authentication off and on, same database, same run (issue 7).

    python bench/auth_overhead.py [--seconds 10] [--rounds 2] [--patients 200] [--entries 4000]

A notebook is loaded through the API (patients, their care teams and plans, entries). Then
three `calipso serve` processes on that database are driven by wrk in turn (ABBA order):
- off: `--auth off`, no audit trail;
- auth: `--dev-issuer`, a practitioner's token (`user/*.rs`, fhirUser Practitioner/prac-0,
  who is in every patient's active care team), no audit trail: token check, scopes, care-team
  lookup and the compartment clause in every query;
- auth+audit: the same, plus an AuditEvent per request (journal + batched commits).
Phases: read-by-id of entries, and the notebook search `Communication?subject=…&_sort=-sent`.
Target: auth costs at most 15 % of throughput (ratio auth/off >= 0.85).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pymongo import MongoClient  # noqa: E402

from bench.harness import HEADER, Figures, ServerProcess, free_port, python, require_wrk, run_wrk  # noqa: E402
from fhir_server.security.dev_issuer import DevIssuer  # noqa: E402
from fhir_server.storage.embedded import EmbeddedDatabase  # noqa: E402

DATABASE = "bench_auth"
MODES = {  # name: (serve flags, environment)
    "off": (["--auth", "off"], {"CALIPSO_AUDIT": "off"}),
    "auth": (["--auth", "on", "--dev-issuer"], {"CALIPSO_AUDIT": "off"}),
    "auth+audit": (["--auth", "on", "--dev-issuer"], {"CALIPSO_AUDIT": "on"}),
}


def start(mode: str, uri: str, data_dir: Path) -> tuple[ServerProcess, str]:
    flags, env = MODES[mode]
    port = free_port()
    server = ServerProcess(
        [python(), "-m", "fhir_server.cli", "serve", *flags, "--port", str(port), "--mllp-port", "0",
         "--data-dir", str(data_dir), "--log-level", "warning"],
        f"http://127.0.0.1:{port}/fhir/metadata",
        env={"CALIPSO_MONGODB_URI": uri, "CALIPSO_DATABASE": DATABASE, **env},
    )
    return server, f"http://127.0.0.1:{port}/fhir"


def run(args: argparse.Namespace) -> None:
    require_wrk()
    work = Path(tempfile.mkdtemp(prefix="calipso-bench-auth-"))
    database = EmbeddedDatabase(work / "db")
    uri = database.start()
    db_pid = database.pid
    servers = {mode: start(mode, uri, work / "data") for mode in MODES}
    token = DevIssuer(work / "data").token("prac-0", "user/*.rs", "calipso", fhir_user="Practitioner/prac-0", lifetime=86400)
    client: MongoClient = MongoClient(uri)
    results: dict[tuple[str, str], Figures] = {}
    try:
        loader, base = servers["off"]
        total = 3 * args.patients + args.entries
        resources = client[DATABASE]["resources"]
        print(f"loading {total} resources ...", file=sys.stderr, flush=True)
        run_wrk("load", base, "load.lua", [str(total), str(args.patients), "1", "0"], 3600, 32, loader.pid, db_pid,
                until=lambda: resources.estimated_document_count() >= total)
        ids = [d["_id"].removeprefix("Communication/") for d in resources.find({"type": "Communication"}, {"_id": 1})]
        ids_file = work / "entries.txt"
        ids_file.write_text("\n".join(ids) + "\n")
        phases = [
            ("read", "read.lua", [str(ids_file), "/fhir/Communication/"]),
            ("search", "query.lua", ["/fhir/Communication?subject=Patient/pat-%d&_sort=-sent&_count=20", str(args.patients)]),
        ]
        for round_number in range(args.rounds):
            order = list(MODES) if round_number % 2 == 0 else list(reversed(MODES))
            for phase, script, script_args in phases:
                for mode in order:
                    server, base = servers[mode]
                    headers = [] if mode == "off" else [f"Authorization: Bearer {token}"]
                    figures = run_wrk(f"{phase} {mode}", base, script, script_args, args.seconds, args.connections,
                                      server.pid, db_pid, headers=headers)
                    key = (phase, mode)
                    results[key] = results[key].merge(figures) if key in results else figures
    finally:
        client.close()
        for server, _ in servers.values():
            server.stop()
        database.stop()

    print(f"# auth_overhead: {args.rounds} rounds x {args.seconds} s per phase and mode, wrk -c{args.connections}, "
          f"{os.cpu_count()} cores, {args.patients} patients, {args.entries} entries, practitioner token (user/*.rs)")
    print(HEADER)
    for phase, _, _ in phases:
        for mode in MODES:
            print(results[(phase, mode)].row())
    for phase, _, _ in phases:
        off = results[(phase, "off")]
        for mode in ("auth", "auth+audit"):
            ours = results[(phase, mode)]
            errors = " (ERRORS: check the run)" if ours.errors or off.errors else ""
            print(f"{phase}: {mode}/off throughput = {ours.rate / off.rate:.2f} (target >= 0.85), "
                  f"server CPU +{ours.server_us - off.server_us:.0f} µs/req{errors}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--patients", type=int, default=200)
    parser.add_argument("--entries", type=int, default=4000)
    run(parser.parse_args())


if __name__ == "__main__":
    main()
