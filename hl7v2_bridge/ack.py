"""Acknowledgements (original mode): AA, AE with ERR, AR with ERR.

The ACK's MSH swaps sender and receiver, answers in the message's version and charset,
MSA-2 echoes MSH-10. ERR follows v2.5: ERR-2 location, ERR-3 code from HL7 table 0357,
ERR-4 severity, ERR-8 the text for a person.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import datetime, timezone

from hl7v2_bridge.er7 import STANDARD, Message, escape

ERROR_TEXTS = {  # HL7 table 0357
    "0": "Message accepted",
    "100": "Segment sequence error",
    "101": "Required field missing",
    "102": "Data type error",
    "103": "Table value not found",
    "200": "Unsupported message type",
    "201": "Unsupported event code",
    "202": "Unsupported processing id",
    "203": "Unsupported version id",
    "204": "Unknown key identifier",
    "205": "Duplicate key identifier",
    "207": "Application internal error",
}
_sequence = itertools.count(1)


@dataclass(frozen=True)
class Problem:
    """What was wrong, for the ERR segment."""

    code: str  # table 0357
    text: str
    location: str = ""  # e.g. PV1-45 or PID


def acknowledge(message: Message | None, code: str, problems: list[Problem] = (), *, charset: str | None = None) -> bytes:  # type: ignore[assignment]
    """The ACK for `message` (None when its MSH could not be read: a minimal ACK)."""
    now = datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S")
    control_id = f"ACK{now}{next(_sequence):06d}"
    if message is not None:
        msh = message.first("MSH")
        assert msh is not None
        sending = (msh.raw(5), msh.raw(6))  # we answer from the receiver named in MSH-5/6
        receiving = (msh.raw(3), msh.raw(4))
        event = message.value("MSH-9.2")
        version = msh.raw(12) or "2.5"
        charset = charset or msh.raw(18)
        answered = message.value("MSH-10")
        processing = msh.raw(11) or "P"
    else:
        sending, receiving, event, version, answered, processing = ("CALIPSO", ""), ("", ""), "", "2.5", "", "P"
    field = STANDARD.field
    msh_fields = ["MSH", STANDARD.encoding_characters, *sending, *receiving, now, "", f"ACK^{event}^ACK" if event else "ACK",
                  control_id, processing, version, "", "", "", "", "", charset or ""]
    segments = [field.join(msh_fields).rstrip(field), field.join(["MSA", code, escape(answered)])]
    for problem in problems:
        severity = "E" if code in ("AE", "AR") else "W"
        location = _location(problem.location)
        text = ERROR_TEXTS.get(problem.code, "")
        segments.append(field.join(["ERR", "", location, f"{problem.code}^{text}^HL70357", severity, "", "", "", escape(problem.text)]))
    codec = "latin-1" if (charset or "").upper().startswith("8859") else "utf-8"
    return ("\r".join(segments) + "\r").encode(codec, errors="replace")


# MSH-15 / MSH-16 (HL7 table 0155): on which outcomes an acknowledgement is sent
SENT_WHEN = {"AL": ("ok", "error"), "NE": (), "ER": ("error",), "SU": ("ok",)}


def ack_code(ack: bytes) -> str:
    """MSA-1 of an ACK (AA, AE, AR, CA…); "" when there is no MSA."""
    for segment in ack.replace(b"\n", b"\r").split(b"\r"):
        if segment.startswith(b"MSA"):
            return segment.split(b"|")[1].decode("ascii", "replace")
    return ""


def _location(location: str) -> str:
    """`PV1-45` -> ERR-2 (ERL): segment^sequence^field."""
    if not location:
        return ""
    segment, _, rest = location.partition("-")
    number = rest.split(".", 1)[0]
    return f"{segment}^1^{number}" if number.isdigit() else segment


__all__ = ["ERROR_TEXTS", "SENT_WHEN", "Problem", "ack_code", "acknowledge"]
