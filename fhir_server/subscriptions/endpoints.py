"""Where notifications may go. By default only https endpoints whose addresses are public: a
subscription must not make the server call into the hospital's network (SSRF). Origins the
operator lists (`CALIPSO_SUBSCRIPTION_ENDPOINTS`, e.g. `http://10.1.2.3:8080`) are allowed
whatever their address or scheme.

The endpoint is checked when the subscription is written (its form, a literal address) and
again before every send (the addresses its name resolves to then)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit


class EndpointRefused(Exception):
    """The endpoint is not one notifications may go to (the message says why; no patient data)."""


def origin(url: str) -> str:
    parts = urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    port = parts.port or default
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{port}"


class EndpointPolicy:
    def __init__(self, allowed_origins: tuple[str, ...] = ()):
        self._allowed = frozenset(origin(o) for o in allowed_origins)

    def listed(self, url: str) -> bool:
        return origin(url) in self._allowed

    def check_form(self, url: str) -> None:
        """At write time: scheme, and a literal address that is not public."""
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise EndpointRefused("The endpoint is not a valid URL") from None
        if not parts.hostname or parts.username or parts.password:
            raise EndpointRefused("The endpoint needs a host and no user information")
        if self.listed(url):
            return
        if parts.scheme != "https":
            raise EndpointRefused("Notifications go to https endpoints (or to origins the operator allows)")
        try:
            address = ipaddress.ip_address(parts.hostname)
        except ValueError:
            return  # a name: its addresses are checked before each send
        if not address.is_global:
            raise EndpointRefused("The endpoint's address is not public (ask the operator to allow its origin)")

    async def check_addresses(self, url: str) -> None:
        """Before a send: every address the host resolves to must be public, unless listed."""
        self.check_form(url)
        if self.listed(url):
            return
        parts = urlsplit(url)
        try:
            found = await asyncio.get_running_loop().getaddrinfo(parts.hostname, parts.port or 443, type=socket.SOCK_STREAM)
        except OSError:
            raise EndpointRefused("The endpoint's host name does not resolve") from None
        for *_, address in found:
            if not ipaddress.ip_address(address[0]).is_global:
                raise EndpointRefused("The endpoint's host resolves to an address that is not public")


__all__ = ["EndpointPolicy", "EndpointRefused", "origin"]
