"""MLLP framing (`0x0B` message `0x1C 0x0D`), independent of any socket.

`FrameReader.feed(bytes)` accepts whatever TCP delivers, in any chunking, and returns the
events found so far: complete frames, bytes found outside a frame (discarded, counted for
the log), and frames that grew past the size limit (the connection is then answered AR and
closed by the server).
"""

from __future__ import annotations

from dataclasses import dataclass, field

START = b"\x0b"
END = b"\x1c\x0d"
DEFAULT_MAX_MESSAGE = 1024 * 1024


@dataclass(frozen=True)
class Frame:
    """A complete message."""

    content: bytes


@dataclass(frozen=True)
class Discarded:
    """Bytes outside any frame."""

    size: int


@dataclass(frozen=True)
class Oversized:
    """A frame longer than the limit; what was read of it (up to the limit) is kept."""

    head: bytes


Event = Frame | Discarded | Oversized


@dataclass
class FrameReader:
    """Incremental MLLP decoder."""

    max_message: int = DEFAULT_MAX_MESSAGE
    _buffer: bytearray = field(default_factory=bytearray)
    _in_frame: bool = False
    _skipping: bool = False  # inside an oversized frame: drop until its end

    def feed(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        self._buffer.extend(data)
        while self._buffer:
            if not self._in_frame:
                start = self._buffer.find(START)
                if start < 0:
                    events.append(Discarded(len(self._buffer)))
                    self._buffer.clear()
                    break
                if start > 0:
                    events.append(Discarded(start))
                del self._buffer[: start + 1]
                self._in_frame = True
                continue
            end = self._buffer.find(END)
            if end < 0:
                if len(self._buffer) > self.max_message + 1:  # keep a byte for a split END
                    if not self._skipping:
                        events.append(Oversized(bytes(self._buffer[: self.max_message])))
                        self._skipping = True
                    keep = self._buffer[-1:]
                    self._buffer.clear()
                    self._buffer.extend(keep)
                break
            content = bytes(self._buffer[:end])
            del self._buffer[: end + len(END)]
            self._in_frame = False
            if self._skipping:
                self._skipping = False
                continue
            if len(content) > self.max_message:
                events.append(Oversized(content[: self.max_message]))
            else:
                events.append(Frame(content))
        return events

    @property
    def pending(self) -> int:
        """Bytes of an unfinished frame (an idle connection closing with some is logged)."""
        return len(self._buffer) if self._in_frame else 0


def frame(content: bytes) -> bytes:
    return START + content + END


__all__ = ["DEFAULT_MAX_MESSAGE", "Discarded", "Frame", "FrameReader", "Oversized", "frame"]
