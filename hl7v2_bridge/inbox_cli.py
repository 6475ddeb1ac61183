"""`calipso inbox list|show|replay`."""

from __future__ import annotations

import argparse
from typing import TextIO

from fhir_server.app import connect
from fhir_server.engine import Engine
from fhir_server.settings import Settings
from fhir_server.spec import load_spec
from fhir_server.storage.store import ResourceStore
from hl7v2_bridge.bridge import Bridge


async def inbox_command(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    client = connect(settings.mongodb_uri or "")
    try:
        store = ResourceStore(client, settings.database)
        await store.ensure_indexes()
        bridge = Bridge(Engine(store, load_spec()), settings.hl7_default_charset)
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
            replayed += 1
            failures += outcome.code != "AA"
            print(f"{key}: {outcome.code}", file=out)
        print(f"replayed {replayed} messages, {replayed - failures} applied", file=out)
        return 1 if failures else 0
    finally:
        await client.close()


__all__ = ["inbox_command"]
