"""`POST /hl7v2`: an HL7 v2 message over HTTP, into the same inbox as MLLP; the ACK comes back."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from fhir_server.outcome import FhirError
from fhir_server.rest.body import read_body
from fhir_server.rest.context import settings_of

ER7_MEDIA_TYPES = ("x-application/hl7-v2+er7", "text/plain", "application/hl7-v2")


async def ingest(request: Request) -> Response:
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media not in ER7_MEDIA_TYPES:
        raise FhirError.of(415, "not-supported", f"Send the message as {ER7_MEDIA_TYPES[0]} or text/plain")
    raw = await read_body(request, settings_of(request).mllp_max_message)
    sender = request.client.host if request.client else ""
    outcome = await request.app.state.bridge.handle(raw, sender)  # original mode: one ACK, in the response
    return Response(outcome.ack, 200, media_type=ER7_MEDIA_TYPES[0])


__all__ = ["ingest"]
