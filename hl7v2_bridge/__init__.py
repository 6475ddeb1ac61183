"""The HL7 v2 bridge: MLLP in, ACK out, ADT messages applied to the liaison notebook."""

from __future__ import annotations

import ssl

from fhir_server.settings import Settings
from hl7v2_bridge.bridge import Bridge, Outcome
from hl7v2_bridge.listener import ListenerSettings, MllpListener


def listener_settings(settings: Settings) -> ListenerSettings:
    """The listener's settings from calipso's (TLS when a certificate and key are given)."""
    tls = None
    if settings.mllp_tls_cert and settings.mllp_tls_key:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(settings.mllp_tls_cert, settings.mllp_tls_key)
    return ListenerSettings(
        host=settings.host,
        port=settings.mllp_port or 0,
        max_message=settings.mllp_max_message,
        idle_timeout=settings.mllp_idle_timeout,
        frame_timeout=settings.mllp_frame_timeout,
        allowed_senders=settings.mllp_allowed_senders,
        tls=tls,
    )


__all__ = ["Bridge", "ListenerSettings", "MllpListener", "Outcome", "listener_settings"]
