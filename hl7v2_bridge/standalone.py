"""`calipso mllp`: the listener without the HTTP API (same engine, same inbox)."""

from __future__ import annotations

import asyncio
import logging
import signal

from fhir_server.security.audit import message_recorder
from fhir_server.services import build_services
from fhir_server.settings import Settings
from hl7v2_bridge import MllpListener, listener_settings

log = logging.getLogger("calipso.mllp")


async def run_listener(settings: Settings) -> int:
    services = await build_services(settings, role="mllp")
    listener = MllpListener(services.bridge, listener_settings(settings), message_recorder(services.audit))
    port = await listener.start()
    print(f"calipso MLLP listener on {settings.host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await listener.stop()
    await services.close()
    return 0


__all__ = ["run_listener"]
