"""Reading a request body: bounded in size before it is buffered, then parsed as JSON (or FHIR
XML, read into the same JSON: xml_format.py)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from fhir_server.engine.patch import FHIRPATH_PATCH, JSON_PATCH
from fhir_server.outcome import FhirError
from fhir_server.rest.negotiation import body_is_xml
from fhir_server.spec import load_spec
from fhir_server.xml_format import XmlFormat


def _too_large(limit: int) -> FhirError:
    return FhirError.of(413, "too-costly", f"The request body is larger than the limit of {limit} bytes")


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refusing (413) as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


UTF8_BOM = b"\xef\xbb\xbf"


async def read_json(request: Request, limit: int) -> Any:
    """The body as JSON; 400 with the parser's reason when it is not JSON (or XML)."""
    if body_is_xml(request):
        raw = await read_body(request, limit)
        if not raw.strip():
            raise FhirError.of(400, "required", "The request has no body: a FHIR resource was expected")
        return XmlFormat(load_spec()).from_xml(raw.removeprefix(UTF8_BOM))
    return await _parse(request, limit)


async def read_patch(request: Request, limit: int) -> tuple[Any, str]:
    """A PATCH body and how to read it: JSON Patch by its media type, else FHIRPath Patch."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media == JSON_PATCH:
        return await _parse(request, limit), JSON_PATCH
    return await read_json(request, limit), FHIRPATH_PATCH


async def _parse(request: Request, limit: int) -> Any:
    raw = await read_body(request, limit)
    if raw.startswith(UTF8_BOM):
        raw = raw[len(UTF8_BOM):]  # RFC 8259 lets a parser ignore it; many editors and test files write one
    if not raw.strip():
        raise FhirError.of(400, "required", "The request has no body: a FHIR resource in JSON was expected")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise FhirError.of(400, "structure", f"The body is not valid JSON: {error}") from None


__all__ = ["read_body", "read_json", "read_patch"]
