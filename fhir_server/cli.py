"""The `calipso` command."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Iterator

from fhir_server import __version__, loader
from fhir_server.heap import freeze_start_up_heap
from fhir_server.settings import Settings
from fhir_server.storage.embedded import EmbeddedDatabase, EmbeddedDatabaseError

log = logging.getLogger("calipso")

LOOPBACK = ("127.0.0.1", "::1", "localhost")
CHATTY_LOGGERS = ("pymongo", "httpx", "httpcore", "hl7apy", "multipart")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="calipso", description="FHIR R4 server for the home-care liaison notebook")
    parser.add_argument("--version", action="version", version=f"calipso {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the FHIR API (and start the embedded database if needed)")
    serve.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="FHIR API port (default 8080)")
    serve.add_argument("--mllp-port", type=int, default=None, help="HL7 v2 MLLP port (default 2575)")
    serve.add_argument("--data-dir", type=Path, default=None, help="where the embedded database keeps its files")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--auth", choices=["on", "off"], default=None,
                       help="bearer tokens required (default on; off only on a loopback host, for a local try)")
    serve.add_argument("--dev-issuer", action="store_true", default=None,
                       help="trust the local token issuer whose key lives in the data dir (see `calipso token`)")
    token = commands.add_parser("token", help="print a token signed by the local dev issuer (last line of stdout)")
    token.add_argument("--data-dir", type=Path, default=None)
    token.add_argument("--sub", required=True, help="the subject (user or client id)")
    token.add_argument("--scope", required=True, help='SMART scopes, e.g. "user/*.read" or "patient/Communication.cruds"')
    token.add_argument("--fhir-user", default=None, help="Practitioner/x, PractitionerRole/x, Patient/x or RelatedPerson/x")
    token.add_argument("--patient", default=None, help="the patient launch context (patient/ scopes)")
    token.add_argument("--audience", default=None, help="the aud claim (default: CALIPSO_AUTH_AUDIENCE or calipso)")
    token.add_argument("--lifetime", type=int, default=3600, help="seconds until it expires (default 3600)")
    load = commands.add_parser("load", help="load Bundles, NDJSON or JSON resources (files or folders)")
    load.add_argument("paths", nargs="+", type=Path, metavar="FILE_OR_DIR")
    load.add_argument("--server", default=None, help="FHIR base URL of a running server (default: a local engine)")
    load.add_argument("--data-dir", type=Path, default=None, help="local engine: the embedded database's files")
    load.add_argument("--chunk", type=int, default=200, help="resources per transaction Bundle (default 200)")
    load.add_argument("--token", default=None, help="bearer token for --server (default: CALIPSO_TOKEN)")
    export = commands.add_parser("export", help="bulk-export a running server's data as NDJSON files (FHIR Bulk Data $export)")
    export.add_argument("--server", default="http://127.0.0.1:8080/fhir", help="FHIR base URL (default http://127.0.0.1:8080/fhir)")
    export.add_argument("--out", type=Path, required=True, help="the folder the files (and manifest.json) are written to")
    level = export.add_mutually_exclusive_group()
    level.add_argument("--group", default=None, help="export a Group's patients (Group/[id]/$export)")
    level.add_argument("--patients", action="store_true", help="export every patient's compartment (Patient/$export)")
    export.add_argument("--type", default=None, help="resource types, comma-separated (_type)")
    export.add_argument("--since", default=None, help="only what changed after this instant (_since)")
    export.add_argument("--type-filter", action="append", default=[], help="Type?search criteria (_typeFilter), repeatable")
    export.add_argument("--keep", action="store_true", help="leave the export on the server (default: DELETE it once downloaded)")
    export.add_argument("--token", default=None, help="bearer token (default: CALIPSO_TOKEN)")
    send = commands.add_parser("send", help="send HL7 v2 files over MLLP, waiting for each ACK")
    send.add_argument("paths", nargs="+", type=Path, metavar="FILE_OR_DIR")
    send.add_argument("--host", default="127.0.0.1")
    send.add_argument("--port", type=int, default=2575)
    send.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each ACK")
    demo = commands.add_parser("demo", help="load a French example notebook into a running calipso (A03 over MLLP, a week of entries)")
    demo.add_argument("--server", default="http://127.0.0.1:8080/fhir", help="FHIR base URL (default http://127.0.0.1:8080/fhir)")
    demo.add_argument("--mllp-host", default="127.0.0.1")
    demo.add_argument("--mllp-port", type=int, default=2575)
    demo.add_argument("--data-dir", type=Path, default=None, help="the server's data dir (its dev issuer signs the demo's tokens)")
    mllp = commands.add_parser("mllp", help="run the MLLP listener alone (no FHIR API)")
    mllp.add_argument("--host", default=None)
    mllp.add_argument("--mllp-port", type=int, default=None)
    mllp.add_argument("--data-dir", type=Path, default=None)
    mllp.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    inbox = commands.add_parser("inbox", help="the HL7 v2 inbox: list, show, replay")
    inbox.add_argument("--data-dir", type=Path, default=None)
    inbox_commands = inbox.add_subparsers(dest="inbox_command", required=True)
    listing = inbox_commands.add_parser("list", help="the latest messages and their status")
    listing.add_argument("--status", choices=["received", "applied", "rejected", "failed"], default=None)
    listing.add_argument("--limit", type=int, default=50)
    show = inbox_commands.add_parser("show", help="one message: raw bytes, status, ACK")
    show.add_argument("key")
    replay = inbox_commands.add_parser("replay", help="apply again the failed (or rejected) messages, e.g. after a mapping fix")
    replay.add_argument("--status", choices=["failed", "rejected"], default="failed")
    doctor = commands.add_parser("doctor", help="check an operator's MongoDB before go-live (version, replica set, writes, indexes)")
    doctor.add_argument("--mongodb-uri", default=None, help="the MongoDB to check (default: CALIPSO_MONGODB_URI)")
    doctor.add_argument("--database", default=None, help="the database calipso will use (default: CALIPSO_DATABASE or calipso)")
    receive = commands.add_parser("receive", help="an example subscription endpoint: checks signatures, prints each notification")
    receive.add_argument("--host", default="127.0.0.1")
    receive.add_argument("--port", type=int, default=9090)
    receive.add_argument("--secret", required=True, help="the signing secret given in the subscription")
    validate = commands.add_parser("validate", help="validate resource files offline (base R4 and our profiles)")
    validate.add_argument("paths", nargs="+", type=Path, metavar="FILE")
    validate.add_argument("--profile", default=None, help="validate against this profile url (default: meta.profile)")
    ig = commands.add_parser("ig", help="the Implementation Guide in profiles/")
    ig_commands = ig.add_subparsers(dest="ig_command", required=True)
    build = ig_commands.add_parser("build", help="write the guide as a FHIR package (.tgz)")
    build.add_argument("--out", type=Path, required=True, metavar="DIR")
    return parser


def _configure_logging(level: str) -> None:
    """Our loggers at `level`; libraries that log what they send or receive (pymongo logs
    whole commands and replies at debug: patient data) never below warning."""
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    for chatty in CHATTY_LOGGERS:
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.getLogger().level))


def _keep_shutdown_signals() -> None:
    """Let SIGTERM/SIGINT end `serve` normally.

    uvicorn shuts down gracefully, restores the handlers it found, then raises the signal
    again; with the default handlers that kills us before the embedded database is stopped.
    These handlers only note it, so the `finally` below runs.
    """
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda number, frame: log.info("stopping on signal %s", number))


def serve(args: argparse.Namespace) -> int:
    """Run the API until SIGTERM/SIGINT; start and stop the embedded database around it."""
    import uvicorn

    from fhir_server.app import create_app
    from fhir_server.rest.header_deadline import with_head_deadline

    _configure_logging(args.log_level)
    settings = Settings.from_env(host=args.host, port=args.port, mllp_port=args.mllp_port, data_dir=args.data_dir,
                                 auth=None if args.auth is None else args.auth == "on", dev_issuer=args.dev_issuer)
    refusal = auth_refusal(settings)
    if refusal:
        print(f"calipso: {refusal}", file=sys.stderr)
        return 2
    if not settings.auth:
        print("calipso: WARNING: authentication is OFF: anyone who reaches this port reads and writes every "
              "patient's notebook. Only for a local try on this machine.", file=sys.stderr, flush=True)
    embedded: EmbeddedDatabase | None = None
    if not settings.mongodb_uri:
        embedded = EmbeddedDatabase(settings.data_dir)
        try:
            settings = replace(settings, mongodb_uri=embedded.start())
        except EmbeddedDatabaseError as error:
            print(f"calipso: {error}", file=sys.stderr)
            return 1
    try:
        config = uvicorn.Config(
            create_app(settings, when_ready=_freeze_start_up_heap),
            host=settings.host,
            port=settings.port,
            access_log=False,  # our AccessLog leaves query strings (patient names) out
            log_level=args.log_level,
            server_header=False,
            http=with_head_deadline(settings.http_head_timeout_seconds),
        )
        print(f"calipso FHIR API on http://{settings.host}:{settings.port}/fhir", flush=True)
        _keep_shutdown_signals()
        uvicorn.Server(config).run()
    finally:
        if embedded is not None:
            embedded.stop()
    return 0


def _freeze_start_up_heap() -> None:
    log.info("start-up heap frozen: %d objects out of the collector's walk", freeze_start_up_heap())


def auth_refusal(settings: Settings) -> str | None:
    """Why these settings must not serve (None: they may)."""
    if not settings.auth and settings.host not in LOOPBACK:
        return f"--auth off is refused on a non-loopback host ({settings.host}): turn authentication on"
    if settings.auth and not settings.dev_issuer and not (settings.auth_issuer and settings.auth_jwks_url):
        return ("authentication is on but no issuer is trusted: set CALIPSO_AUTH_ISSUER and CALIPSO_AUTH_JWKS_URL, "
                "or pass --dev-issuer to try with `calipso token`, or --auth off for a local try")
    return None


def token(args: argparse.Namespace) -> int:
    """Sign a token with the data dir's dev issuer key (made on first use)."""
    from fhir_server.security.dev_issuer import DevIssuer

    settings = Settings.from_env(data_dir=args.data_dir)
    issuer = DevIssuer(settings.data_dir)
    audience = args.audience or settings.auth_audience
    print(f"calipso dev issuer: sub={args.sub} aud={audience} expires in {args.lifetime} s", file=sys.stderr)
    print(issuer.token(args.sub, args.scope, audience, patient=args.patient, fhir_user=args.fhir_user, lifetime=args.lifetime))
    return 0


def load(args: argparse.Namespace) -> int:
    """Post files to a server (or to a local engine on the data dir); 1 when anything failed."""
    import asyncio

    _configure_logging("warning")
    if args.chunk < 1:
        print("calipso load: --chunk must be at least 1", file=sys.stderr)
        return 2
    files = loader.discover(args.paths)
    progress = loader.Progress(len(files))
    try:
        if args.server:
            token = args.token or os.environ.get("CALIPSO_TOKEN")
            summary = asyncio.run(_load_remote(args.server.rstrip("/"), files, args.chunk, progress, token))
        else:
            summary = _load_local(Settings.from_env(data_dir=args.data_dir), files, args.chunk, progress)
    except (OSError, EmbeddedDatabaseError) as error:
        print(f"calipso load: {error}", file=sys.stderr)
        return 2
    loader.report(summary)
    return 1 if summary.counts["failed"] else 0


async def _load_remote(base_url: str, files: list[Path], chunk: int, progress: loader.Progress, token: str | None) -> loader.Summary:
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(timeout=300, headers=headers) as client:
        try:
            return await loader.load(client, base_url, files, chunk, progress)
        except httpx.TransportError as error:
            raise OSError(f"cannot reach {base_url}: {error}") from None


def _load_local(settings: Settings, files: list[Path], chunk: int, progress: loader.Progress) -> loader.Summary:
    """The same HTTP API, served in process over the embedded database (or CALIPSO_MONGODB_URI)."""
    import asyncio

    import httpx

    from fhir_server.app import create_app

    embedded = None if settings.mongodb_uri else EmbeddedDatabase(settings.data_dir)
    if embedded is not None:
        settings = replace(settings, mongodb_uri=embedded.start())
    settings = replace(settings, auth=False)  # in process, no socket: the operator of this data dir loads it

    async def run() -> loader.Summary:
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://calipso.local", timeout=300) as client:
                return await loader.load(client, "http://calipso.local/fhir", files, chunk, progress)

    try:
        return asyncio.run(run())
    finally:
        if embedded is not None:
            embedded.stop()


def validate(args: argparse.Namespace) -> int:
    """Print each file's issues; 1 when any file has an error, 2 when a file cannot be read."""
    from fhir_server.offline_validation import validate_files

    return validate_files(args.paths, args.profile, sys.stdout)


def ig(args: argparse.Namespace) -> int:
    from fhir_server.ig import load_guide
    from fhir_server.ig.package import write_package

    target = write_package(load_guide(), args.out)
    print(f"wrote {target}")
    return 0


def send(args: argparse.Namespace) -> int:
    """MLLP client over files or folders; 1 when any message got AE/AR, 2 when it could not run."""
    import asyncio

    from hl7v2_bridge.sending import send_files

    try:
        return asyncio.run(send_files(args.paths, args.host, args.port, args.timeout, sys.stdout, sys.stderr))
    except OSError as error:
        print(f"calipso send: {error}", file=sys.stderr)
        return 2


def demo(args: argparse.Namespace) -> int:
    """Load the demo notebook; 1 when a step failed (the message says which)."""
    from fhir_server.demo import DemoError, load_demo

    settings = Settings.from_env(data_dir=args.data_dir)
    try:
        summary = load_demo(args.server, args.mllp_host, args.mllp_port, settings.data_dir, settings.auth_audience)
    except (DemoError, OSError) as error:
        print(f"calipso demo: {error}", file=sys.stderr)
        return 1
    origin = args.server.rstrip("/").rsplit("/fhir", 1)[0]
    print(f"demo loaded: {summary.patient}, {summary.entries} entries, {summary.receipts} read receipts")
    print(f"open {origin}/app/ and sign in as one of them (the dev sign-in page lists them)")
    return 0


def mllp(args: argparse.Namespace) -> int:
    """The listener alone: the same engine and bridge, without the HTTP API."""
    import asyncio

    from hl7v2_bridge.standalone import run_listener

    _configure_logging(args.log_level)
    settings = Settings.from_env(host=args.host, mllp_port=args.mllp_port, data_dir=args.data_dir)
    with _database(settings) as ready:
        _keep_shutdown_signals()
        return asyncio.run(run_listener(ready))


def inbox(args: argparse.Namespace) -> int:
    import asyncio

    from hl7v2_bridge.inbox_cli import inbox_command

    from pymongo.errors import PyMongoError

    _configure_logging("warning")
    try:
        with _database(Settings.from_env(data_dir=args.data_dir)) as ready:
            return asyncio.run(inbox_command(ready, args, sys.stdout))
    except (EmbeddedDatabaseError, PyMongoError, OSError) as error:
        print(f"calipso inbox: {error}", file=sys.stderr)
        return 2


@contextmanager
def _database(settings: Settings) -> Iterator[Settings]:
    """Settings with a database: CALIPSO_MONGODB_URI, the embedded one a running calipso holds
    in the data dir, or the embedded one started for the block."""
    if settings.mongodb_uri:
        yield settings
        return
    running = EmbeddedDatabase.running_uri(settings.data_dir)
    if running is not None:
        yield replace(settings, mongodb_uri=running)
        return
    embedded = EmbeddedDatabase(settings.data_dir)
    try:
        yield replace(settings, mongodb_uri=embedded.start())
    finally:
        embedded.stop()


def doctor(args: argparse.Namespace) -> int:
    """One line per check; 0 when nothing failed, 1 when something did, 2 without a URI."""
    import asyncio

    from fhir_server.storage.doctor import examine

    settings = Settings.from_env()
    uri = args.mongodb_uri or settings.mongodb_uri
    if not uri:
        print("calipso doctor: give --mongodb-uri (or set CALIPSO_MONGODB_URI)", file=sys.stderr)
        return 2
    findings = asyncio.run(examine(uri, args.database or settings.database))
    for finding in findings:
        print(finding.line())
    return 1 if any(f.verdict == "FAIL" for f in findings) else 0


def receive(args: argparse.Namespace) -> int:
    """Print one line per notification received (kind, event numbers, focus ids) until ^C."""
    import time

    from fhir_server.subscriptions.receiver import Received, Receiver, describe

    def show(item: Received) -> None:
        print(describe(item), flush=True)

    endpoint = Receiver(args.secret, on_receive=show).start(args.host, args.port)
    print(f"calipso receive: listening on {endpoint.url} (signatures checked with the given secret)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        endpoint.stop()
    return 0


def export(args: argparse.Namespace) -> int:
    """Kick off, follow and download a bulk export; 1 when the server refused or failed it."""
    import asyncio
    from urllib.parse import urlencode

    import httpx

    from fhir_server.bulk.client import ExportFailed
    from fhir_server.bulk.client import export as bulk_export

    base = args.server.rstrip("/")
    path = f"/Group/{args.group}/$export" if args.group else "/Patient/$export" if args.patients else "/$export"
    query = [(k, v) for k, v in (("_type", args.type), ("_since", args.since)) if v] + [("_typeFilter", f) for f in args.type_filter]
    url = f"{base}{path}" + (f"?{urlencode(query)}" if query else "")
    token = args.token or os.environ.get("CALIPSO_TOKEN")

    async def run() -> int:
        async with httpx.AsyncClient(timeout=300, headers={"Authorization": f"Bearer {token}"} if token else {}) as client:
            done = await bulk_export(client, url, args.out, keep=args.keep)
        counts = ", ".join(f"{n} {t}" for t, n in sorted(done.resources.items())) or "no resources"
        print(f"exported {counts} into {len(done.files)} file(s) in {done.folder}")
        return 0

    try:
        return asyncio.run(run())
    except ExportFailed as error:
        print(f"calipso export: {error}", file=sys.stderr)
        return 1
    except httpx.TransportError as error:
        print(f"calipso export: cannot reach {base}: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("calipso export: cancelled (the server's job was deleted)", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    commands = {"serve": serve, "token": token, "load": load, "validate": validate, "ig": ig, "send": send, "mllp": mllp, "inbox": inbox,
                "doctor": doctor, "demo": demo, "receive": receive, "export": export}
    return commands[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
