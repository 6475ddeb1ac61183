"""The access policy's limits (and a compartment's) said as database filters. The policy (security/policy.py) decides
*what* a user reaches: resources by id or by their compartment references, minus what a
visibility label hides from the user unless the user wrote it. This module says it the way the
database reads it, on the index entries the store keeps (`ix.rf` references, `ix.tk` tokens)."""

from __future__ import annotations

from typing import Any, Sequence

NOTHING: dict[str, Any] = {"_id": {"$in": []}}  # reaches no document


def reach_filter(ids: Sequence[str] | None = None, references: Sequence[str] | None = None,
                 hidden: Sequence[str] = (), authored: Sequence[str] = (), tokens: Sequence[str] | None = None) -> dict[str, Any]:
    """Documents whose key is one of `ids` (or that carry one of `references`, or one of the
    token entries `tokens`), without any of the `hidden` label entries unless they carry one of
    `authored` (the user's author entries)."""
    found: dict[str, Any] = {}
    if tokens is not None:
        found["ix.tk"] = {"$in": list(tokens)}
    if ids is not None:
        found["_id"] = {"$in": ids}
    if references is not None:
        found["ix.rf"] = {"$in": references}
    if hidden:
        unlabelled = {"ix.tk": {"$nin": hidden}}
        found.update({"$or": [unlabelled, {"ix.rf": {"$in": authored}}]} if authored else unlabelled)
    return found


def compartment_filter(owner: str | None, references: Sequence[str]) -> dict[str, Any]:
    """The resources of a compartment: those carrying one of its `references` (its parameters
    pointing at the owner), and the owner itself ("Patient/x", when the type is the owner's)."""
    referring = {"ix.rf": {"$in": list(references)}}
    return {"$or": [{"_id": owner}, referring]} if owner is not None else referring


__all__ = ["NOTHING", "compartment_filter", "reach_filter"]
