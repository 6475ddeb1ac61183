"""An MLLP client: one connection, one message at a time, waiting for each ACK."""

from __future__ import annotations

import asyncio
import ssl

from hl7v2_bridge.ack import ack_code
from hl7v2_bridge.mllp import Frame, FrameReader, frame


class MllpClient:
    """`async with MllpClient(host, port) as client: ack = await client.send(message)`."""

    def __init__(self, host: str, port: int, timeout: float = 30.0, tls: ssl.SSLContext | None = None):
        self._host, self._port, self._timeout, self._tls = host, port, timeout, tls
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._frames = FrameReader()
        self._ready: list[bytes] = []

    async def __aenter__(self) -> "MllpClient":
        self._reader, self._writer = await asyncio.wait_for(
            asyncio.open_connection(self._host, self._port, ssl=self._tls), self._timeout
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except ConnectionError:
                pass

    async def send(self, message: bytes) -> bytes:
        """Send one framed message; the ACK's bytes (ConnectionError if the server hangs up)."""
        await self.send_frame(message)
        return await self.receive()

    async def send_frame(self, message: bytes) -> None:
        """Send one message, framed, without waiting for anything."""
        await self.send_raw(frame(message))

    async def send_raw(self, data: bytes) -> None:
        assert self._writer is not None
        self._writer.write(data)
        await self._writer.drain()

    async def receive(self, timeout: float | None = None) -> bytes:
        """The next frame's content; TimeoutError after `timeout` (default: the client's)."""
        assert self._reader is not None
        while not self._ready:
            data = await asyncio.wait_for(self._reader.read(65536), timeout if timeout is not None else self._timeout)
            if not data:
                raise ConnectionError("the server closed the connection without an ACK")
            self._ready.extend(e.content for e in self._frames.feed(data) if isinstance(e, Frame))
        return self._ready.pop(0)


__all__ = ["MllpClient", "ack_code"]
