"""`calipso mllp`: the listener without the HTTP API (same engine, same inbox)."""

from __future__ import annotations

import asyncio
import logging
import signal

from fhir_server.app import connect
from fhir_server.engine import Engine
from fhir_server.security.audit import AuditTrail, engine_committer, message_recorder
from fhir_server.settings import Settings
from fhir_server.spec import load_spec
from fhir_server.storage.store import ResourceStore
from hl7v2_bridge import Bridge, MllpListener, listener_settings

log = logging.getLogger("calipso.mllp")


async def run_listener(settings: Settings) -> int:
    client = connect(settings.mongodb_uri or "")
    store = ResourceStore(client, settings.database)
    await store.ensure_indexes()
    engine = Engine(store, load_spec(), enforce_profiles=settings.enforce_profiles)
    trail = AuditTrail(engine_committer(engine), settings.data_dir / "audit", role="mllp") if settings.audit else None
    if trail is not None:
        await trail.start()
    listener = MllpListener(Bridge(engine, settings.hl7_default_charset), listener_settings(settings), message_recorder(trail))
    port = await listener.start()
    print(f"calipso MLLP listener on {settings.host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await listener.stop()
    if trail is not None:
        await trail.stop()
    await client.close()
    return 0


__all__ = ["run_listener"]
