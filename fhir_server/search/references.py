"""Reading a FHIR reference string: its target type, its parts."""

from __future__ import annotations

import re

# `[base/]Type/id[/_history/version]`: a RESTful reference or URL (R4 Bundle, "Resolving references")
RESTFUL = re.compile(r"^(?P<base>.*?/)?(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})(?:/_history/(?P<version>[A-Za-z0-9\-.]{1,64}))?$")


def reference_type(reference: str) -> str | None:
    """`Patient/1`, `http://x/fhir/Patient/1/_history/2` -> `Patient`; local refs and urns -> None."""
    if reference.startswith(("#", "urn:")):
        return None
    parts = reference.split("?", 1)[0].split("/")
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    if len(parts) >= 2 and parts[-2][:1].isupper():
        return parts[-2]
    if len(parts) == 1 and parts[0][:1].isupper():  # conditional reference `Patient?identifier=…`
        return parts[0]
    return None


__all__ = ["RESTFUL", "reference_type"]
