"""Reading the target type out of a FHIR reference string."""

from __future__ import annotations


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


__all__ = ["reference_type"]
