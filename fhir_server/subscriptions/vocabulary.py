"""The urls and codes of subscriptions, read from subscriptions.json (data, not code)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

import orjson

_DATA: dict[str, Any] = orjson.loads(files("fhir_server.subscriptions").joinpath("subscriptions.json").read_bytes())

BACKPORT: dict[str, str] = _DATA["backport"]
SIGNING_SECRET: str = _DATA["signingSecret"]
SIGNATURE_HEADER: str = _DATA["signatureHeader"]
CHANNEL_TYPES: frozenset[str] = frozenset(_DATA["channelTypes"])
PAYLOAD_CONTENTS: frozenset[str] = frozenset(_DATA["payloadContents"])
DEFAULT_PAYLOAD_CONTENT: str = _DATA["defaultPayloadContent"]
PAYLOAD_MIME_TYPES: frozenset[str] = frozenset(_DATA["payloadMimeTypes"])
BACKPORT_DIR = Path(__file__).resolve().parent / "backport"  # the Backport IG's R4 notification profiles (NOTICE)

__all__ = ["BACKPORT", "BACKPORT_DIR", "CHANNEL_TYPES", "DEFAULT_PAYLOAD_CONTENT", "PAYLOAD_CONTENTS", "PAYLOAD_MIME_TYPES", "SIGNATURE_HEADER",
           "SIGNING_SECRET"]
