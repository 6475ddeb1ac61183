"""The `calipso` command."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from dataclasses import replace
from pathlib import Path

from fhir_server import __version__, loader
from fhir_server.settings import Settings
from fhir_server.storage.embedded import EmbeddedDatabase, EmbeddedDatabaseError

log = logging.getLogger("calipso")


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
    load = commands.add_parser("load", help="load Bundles, NDJSON or JSON resources (files or folders)")
    load.add_argument("paths", nargs="+", type=Path, metavar="FILE_OR_DIR")
    load.add_argument("--server", default=None, help="FHIR base URL of a running server (default: a local engine)")
    load.add_argument("--data-dir", type=Path, default=None, help="local engine: the embedded database's files")
    load.add_argument("--chunk", type=int, default=200, help="resources per transaction Bundle (default 200)")
    validate = commands.add_parser("validate", help="validate resource files offline (base R4 and our profiles)")
    validate.add_argument("paths", nargs="+", type=Path, metavar="FILE")
    validate.add_argument("--profile", default=None, help="validate against this profile url (default: meta.profile)")
    ig = commands.add_parser("ig", help="the Implementation Guide in profiles/")
    ig_commands = ig.add_subparsers(dest="ig_command", required=True)
    build = ig_commands.add_parser("build", help="write the guide as a FHIR package (.tgz)")
    build.add_argument("--out", type=Path, required=True, metavar="DIR")
    return parser


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )


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

    _configure_logging(args.log_level)
    settings = Settings.from_env(host=args.host, port=args.port, mllp_port=args.mllp_port, data_dir=args.data_dir)
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
            create_app(settings),
            host=settings.host,
            port=settings.port,
            access_log=False,  # our AccessLog leaves query strings (patient names) out
            log_level=args.log_level,
            server_header=False,
        )
        print(f"calipso FHIR API on http://{settings.host}:{settings.port}/fhir", flush=True)
        _keep_shutdown_signals()
        uvicorn.Server(config).run()
    finally:
        if embedded is not None:
            embedded.stop()
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
            summary = asyncio.run(_load_remote(args.server.rstrip("/"), files, args.chunk, progress))
        else:
            summary = _load_local(Settings.from_env(data_dir=args.data_dir), files, args.chunk, progress)
    except (OSError, EmbeddedDatabaseError) as error:
        print(f"calipso load: {error}", file=sys.stderr)
        return 2
    loader.report(summary)
    return 1 if summary.counts["failed"] else 0


async def _load_remote(base_url: str, files: list[Path], chunk: int, progress: loader.Progress) -> loader.Summary:
    import httpx

    async with httpx.AsyncClient(timeout=300) as client:
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


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    commands = {"serve": serve, "load": load, "validate": validate, "ig": ig}
    return commands[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
