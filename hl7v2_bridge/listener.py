"""The MLLP listener: many connections, many messages per connection, one ACK per frame.

Frames on one connection are answered in order (the sender waits for each ACK in original
mode). Bytes outside frames are discarded and logged; a frame over the size limit is
answered AR and the connection closed; an idle connection is closed after `idle_timeout`.
Optional TLS (an `ssl.SSLContext`) and a sender allow-list (peer IP addresses).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass
from typing import Callable

from hl7v2_bridge.ack import Problem, acknowledge
from hl7v2_bridge.bridge import Bridge
from fhir_server.storage.inbox import digest
from hl7v2_bridge.mllp import DEFAULT_MAX_MESSAGE, Discarded, Frame, FrameReader, Oversized, frame

log = logging.getLogger("calipso.mllp")
READ_SIZE = 65536


@dataclass(frozen=True)
class ListenerSettings:
    host: str = "127.0.0.1"
    port: int = 2575
    max_message: int = DEFAULT_MAX_MESSAGE
    idle_timeout: float = 300.0
    frame_timeout: float = 30.0  # a frame begun must be whole within this: a trickling sender is cut off
    allowed_senders: frozenset[str] = frozenset()  # empty: everyone
    tls: ssl.SSLContext | None = None


class MllpListener:
    """An asyncio server handing every frame to the bridge."""

    def __init__(self, bridge: Bridge, settings: ListenerSettings, on_message: Callable[[str, str, str], None] | None = None):
        self._bridge = bridge
        self._settings = settings
        self._on_message = on_message  # (ACK code, sender, inbox key) of each message: the audit trail
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        """Listen; the port actually bound (useful with port 0)."""
        self._server = await asyncio.start_server(
            self._serve, self._settings.host, self._settings.port, ssl=self._settings.tls, limit=READ_SIZE
        )
        port = int(self._server.sockets[0].getsockname()[1])
        log.info("mllp listening host=%s port=%d tls=%s", self._settings.host, port, self._settings.tls is not None)
        return port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        peer = writer.get_extra_info("peername")
        sender = str(peer[0]) if peer else ""
        try:
            if self._settings.allowed_senders and sender not in self._settings.allowed_senders:
                log.warning("mllp connection refused peer=%s (not an allowed sender)", sender)
                return
            await self._converse(reader, writer, sender)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError) as error:
            log.info("mllp connection lost peer=%s reason=%s", sender, type(error).__name__)
        finally:
            self._connections.discard(task)
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, ssl.SSLError):
                pass

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, sender: str) -> None:
        frames = FrameReader(self._settings.max_message)
        frame_deadline = 0.0  # when the frame being read must be whole (while frames.pending)
        loop = asyncio.get_running_loop()
        while True:
            wait = self._settings.idle_timeout
            if frames.pending:
                wait = min(wait, frame_deadline - loop.time())
            try:
                data = await asyncio.wait_for(reader.read(READ_SIZE), max(wait, 0.0))
            except asyncio.TimeoutError:
                if frames.pending:
                    log.warning("mllp frame not whole in %.0f s, connection closed peer=%s bytes=%d",
                                self._settings.frame_timeout, sender, frames.pending)
                else:
                    log.info("mllp idle connection closed peer=%s", sender)
                return
            fresh = not frames.pending  # these bytes begin a frame: its time starts now
            if not data:
                if frames.pending:
                    log.warning("mllp connection closed mid-frame peer=%s bytes=%d", sender, frames.pending)
                return
            for event in frames.feed(data):
                fresh = fresh or isinstance(event, Frame)  # what is left after a whole frame is a new one
                if isinstance(event, Discarded):
                    log.warning("mllp bytes outside any frame discarded peer=%s bytes=%d", sender, event.size)
                elif isinstance(event, Oversized):
                    problem = Problem("207", f"The message is larger than {self._settings.max_message} bytes")
                    await self._bridge.inbox.keep_rejected(f"oversized:{digest(event.head)}", event.head, sender,
                                                           acknowledge(None, "AR", [problem]), {"code": "207", "text": problem.text})
                    writer.write(frame(acknowledge(None, "AR", [problem])))
                    await writer.drain()
                    log.warning("mllp oversized message refused peer=%s", sender)
                    return
                elif isinstance(event, Frame):

                    async def accept(ack: bytes) -> None:  # enhanced mode: CA before applying
                        writer.write(frame(ack))
                        await writer.drain()

                    outcome = await self._bridge.handle(event.content, sender, accept)
                    if self._on_message is not None:
                        self._on_message(outcome.code, sender, outcome.key)
                    if outcome.ack is not None:
                        writer.write(frame(outcome.ack))
                        await writer.drain()
            if fresh:
                frame_deadline = loop.time() + self._settings.frame_timeout


__all__ = ["ListenerSettings", "MllpListener"]
