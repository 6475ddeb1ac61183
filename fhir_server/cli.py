"""The `calipso` command."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from dataclasses import replace
from pathlib import Path

from fhir_server import __version__
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


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
