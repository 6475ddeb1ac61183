"""`calipso inbox list|show|replay`."""

from __future__ import annotations

import argparse
from typing import TextIO

from fhir_server.security.audit import message_recorder
from fhir_server.services import build_services
from fhir_server.settings import Settings


async def inbox_command(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    """On the services `calipso serve` runs on (fhir_server/services.py): a replay is validated,
    enforced and audited as the listener's messages are."""
    services = await build_services(settings, role="inbox")
    record = message_recorder(services.audit)
    try:
        bridge = services.bridge
        if args.inbox_command == "list":
            for listed in await bridge.inbox.listing(args.status, args.limit):
                error = listed.get("error", {})
                print(f"{listed['received']:%Y-%m-%d %H:%M:%S}  {listed['status']:<9} {listed.get('event', ''):<4} {listed['_id']}"
                      + (f"  [{error.get('code')}] {error.get('text', '')[:80]}" if error else ""), file=out)
            return 0
        if args.inbox_command == "show":
            doc = await bridge.inbox.get(args.key)
            if doc is None:
                print(f"no message {args.key}", file=out)
                return 1
            print(f"key: {doc['_id']}\nstatus: {doc['status']}\nreceived: {doc['received']}\nsha256: {doc['sha256']}", file=out)
            if doc.get("error"):
                print(f"error: {doc['error']}", file=out)
            print("message:\n" + bytes(doc["raw"]).decode("latin-1").replace("\r", "\n"), file=out)
            if doc.get("ack"):
                print("ack:\n" + bytes(doc["ack"]).decode("latin-1").replace("\r", "\n"), file=out)
            return 0
        replayed = 0
        failures = 0
        for key, raw in await bridge.inbox.raw_of(args.status):
            await bridge.inbox.reopen(key)
            outcome = await bridge.handle(raw, "replay")
            if record is not None:
                record(outcome.code, "replay", key)
            replayed += 1
            failures += outcome.code != "AA"
            print(f"{key}: {outcome.code}", file=out)
        print(f"replayed {replayed} messages, {replayed - failures} applied", file=out)
        return 1 if failures else 0
    finally:
        await services.close()


__all__ = ["inbox_command"]
