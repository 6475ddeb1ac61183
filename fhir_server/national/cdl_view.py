"""The ANS "Cahier de liaison" view of the notebook: a notebook entry (Communication) read as a
`CdLDocumentReference`, a CdL note written as a notebook entry, and the GestionnaireCdL search
parameters said in the notebook's terms. Pure functions over JSON; cdl-view.json holds the
tables. One source of truth: the view is computed on every read, never stored.

| CdLDocumentReference | notebook entry (Communication) |
|---|---|
| id, meta.versionId, meta.lastUpdated | the same |
| masterIdentifier | identifier[0] |
| status current / entered-in-error | status (entered-in-error, else completed) |
| type (TRE_R234) | category: the note type coding; our entry kind when one maps |
| subject | subject |
| date | sent |
| author | sender (the first author when a note names several) |
| relatesTo (appends) | inResponseTo |
| securityLabel (TRE_A07) | meta.security |
| extension isEmergency | priority urgent / routine |
| content.attachment (text/plain, fr, base64) | payload.contentString; other attachments as payload.contentAttachment |
| context.encounter | encounter |
"""

from __future__ import annotations

import base64
import binascii
from functools import cache
from importlib.resources import files
from typing import Any

import orjson

from fhir_server.ig.entry_kinds import entry_kinds
from fhir_server.outcome import FhirError, Issue

DOCUMENT = "DocumentReference"
NOTE = "Communication"
PLAIN_TEXT = "text/plain"
SERVED_TEXT = "text/plain; charset=utf-8"


@cache
def view_table() -> dict[str, Any]:
    return dict(orjson.loads(files("fhir_server.national").joinpath("cdl-view.json").read_bytes()))


def _kinds() -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    kinds = {k["code"]: k for k in entry_kinds()}
    return kinds, next(k for k in kinds.values() if k["receipt"])


def is_note(entry: dict[str, Any]) -> bool:
    """A notebook entry the view shows: a read receipt is not a note."""
    _, receipt = _kinds()
    return not any(c.get("system") == receipt["system"] and c.get("code") == receipt["code"]
                   for concept in entry.get("category", []) for c in concept.get("coding", []))


def to_document_reference(entry: dict[str, Any]) -> dict[str, Any]:
    """The CdLDocumentReference of a notebook entry."""
    table = view_table()
    kinds, _ = _kinds()
    meta = {k: v for k, v in (entry.get("meta") or {}).items() if k in ("versionId", "lastUpdated")}
    document: dict[str, Any] = {"resourceType": DOCUMENT, "id": entry["id"], "meta": {**meta, "profile": [table["profiles"]["document"]]}}
    document["extension"] = [{"url": table["emergency_extension"], "valueBoolean": entry.get("priority") in table["urgent_priorities"]}]
    if entry.get("identifier"):
        document["masterIdentifier"] = entry["identifier"][0]
    document["status"] = "entered-in-error" if entry.get("status") == "entered-in-error" else "current"
    document["type"] = {"coding": [_note_type(entry, kinds, table)]}
    document["subject"] = entry.get("subject")
    if entry.get("sent"):
        document["date"] = entry["sent"]
    if entry.get("sender"):
        document["author"] = [entry["sender"]]
    relates = [{"code": "appends", "target": {"reference": _as(ref.get("reference", ""), NOTE, DOCUMENT)}}
               for ref in entry.get("inResponseTo", []) if ref.get("reference")]
    if relates:
        document["relatesTo"] = relates
    labels = [c for c in (entry.get("meta") or {}).get("security", []) if c.get("system") == table["label_system"]]
    if labels:
        document["securityLabel"] = [{"coding": labels[:1]}]
    document["content"] = [_content(part) for part in entry.get("payload", [])] or [
        {"attachment": {"contentType": SERVED_TEXT, "language": "fr", "data": ""}}]
    if entry.get("encounter"):
        document["context"] = {"encounter": [entry["encounter"]]}
    return document


def _note_type(entry: dict[str, Any], kinds: dict[str, dict[str, Any]], table: dict[str, Any]) -> dict[str, Any]:
    """The entry's ANS note type: the coding it carries, else the one its kind maps to, else GEN."""
    codings = [c for concept in entry.get("category", []) for c in concept.get("coding", [])]
    for coding in codings:
        if coding.get("system") == table["note_type_system"]:
            return {"system": coding["system"], "code": coding["code"]}
    for coding in codings:
        kind = kinds.get(coding.get("code", ""))
        if kind and coding.get("system") == kind["system"] and "noteType" in kind:
            return dict(kind["noteType"])
    return {"system": table["note_type_system"], "code": "GEN"}


def _content(part: dict[str, Any]) -> dict[str, Any]:
    if "contentString" in part:
        data = base64.b64encode(part["contentString"].encode("utf-8")).decode()
        return {"attachment": {"contentType": SERVED_TEXT, "language": "fr", "data": data}}
    if "contentAttachment" in part:
        return {"attachment": part["contentAttachment"]}
    return {"attachment": {"contentType": PLAIN_TEXT, "title": "Référence", "url": (part.get("contentReference") or {}).get("reference", "")}}


def to_communication(document: dict[str, Any], entry_profile: str) -> dict[str, Any]:
    """The notebook entry a CdL note is written as (the caller validates it like any entry)."""
    table = view_table()
    kinds, _ = _kinds()
    entry: dict[str, Any] = {"resourceType": NOTE}
    if document.get("id"):
        entry["id"] = document["id"]
    entry["meta"] = {"profile": [entry_profile]}
    labels = [c for label in document.get("securityLabel", []) for c in label.get("coding", []) if c.get("system") == table["label_system"]]
    if labels:
        entry["meta"]["security"] = labels
    if document.get("masterIdentifier"):
        entry["identifier"] = [document["masterIdentifier"]]
    entry["status"] = "entered-in-error" if document.get("status") == "entered-in-error" else "completed"
    entry["category"] = [{"coding": _category(document, kinds, table)}]
    urgent = any(e.get("url") == table["emergency_extension"] and e.get("valueBoolean") is True for e in document.get("extension", []))
    entry["priority"] = "urgent" if urgent else "routine"
    if document.get("subject"):
        entry["subject"] = document["subject"]
    encounters = (document.get("context") or {}).get("encounter", [])
    if encounters:
        entry["encounter"] = encounters[0]
    if document.get("date"):
        entry["sent"] = document["date"]
    if document.get("author"):
        entry["sender"] = document["author"][0]
    answers = [{"reference": _as(r["target"]["reference"], DOCUMENT, NOTE)} for r in document.get("relatesTo", [])
               if r.get("code") == "appends" and isinstance(r.get("target"), dict) and r["target"].get("reference")]
    if answers:
        entry["inResponseTo"] = answers
    entry["payload"] = [_payload(content.get("attachment") or {}) for content in document.get("content", [])]
    return entry


def _category(document: dict[str, Any], kinds: dict[str, dict[str, Any]], table: dict[str, Any]) -> list[dict[str, Any]]:
    codings = [c for c in (document.get("type") or {}).get("coding", []) if c.get("system") == table["note_type_system"]]
    if not codings:
        return [{"system": table["note_type_system"], "code": "GEN"}]
    note_type = {"system": codings[0]["system"], "code": codings[0].get("code")}
    kind = kinds.get(table["entry_kind_of_note_type"].get(note_type["code"], ""))
    found = [{"system": kind["system"], "code": kind["code"], "display": kind["display"]}] if kind else []
    return [*found, note_type]


def _payload(attachment: dict[str, Any]) -> dict[str, Any]:
    """Plain text becomes the entry's text; anything else stays an attachment. The text's
    charset is the contentType's `charset=`, else UTF-8, else ISO-8859-1 (French systems, and
    the guide's own example, send Latin-1 without saying so)."""
    media_type, _, parameters = str(attachment.get("contentType", "")).partition(";")
    if media_type.strip().lower() != PLAIN_TEXT or not isinstance(attachment.get("data"), str) or attachment.get("url"):
        return {"contentAttachment": attachment}
    charset = next((p.split("=", 1)[1].strip().strip('"') for p in parameters.split(";") if p.strip().lower().startswith("charset=")), None)
    try:
        raw = base64.b64decode(attachment["data"], validate=True)
        if charset:
            return {"contentString": raw.decode(charset)}
        try:
            return {"contentString": raw.decode("utf-8")}
        except UnicodeDecodeError:
            return {"contentString": raw.decode("iso-8859-1")}
    except (binascii.Error, UnicodeDecodeError, LookupError):
        raise FhirError(422, Issue("invalid", "DocumentReference.content.attachment.data: text/plain data must be base64 of text "
                                              "in its charset", expression="DocumentReference.content.attachment.data")) from None


def _as(reference: str, old: str, new: str) -> str:
    """`DocumentReference/x` <-> `Communication/x` (other references unchanged)."""
    return new + reference[len(old):] if reference.startswith(old + "/") else reference


def translate_search(params: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], list[str]]:
    """The notebook search for CdL parameters, and the parameters the view does not support.
    Chains and modifiers are kept (`subject.identifier=…`, `author:Practitioner.name=…`)."""
    table = view_table()
    _, receipt = _kinds()
    translated: list[tuple[str, str]] = [("category:not", f"{receipt['system']}|{receipt['code']}")]
    unsupported: list[str] = []
    for name, value in params:
        base, cut, rest = _split_name(name)
        if base == "_sort":
            keys = [(k[1:], "-") if k.startswith("-") else (k, "") for k in value.split(",") if k]
            if any(k not in table["sorts"] for k, _ in keys):
                unsupported.append(name)
                continue
            translated.append(("_sort", ",".join(sign + table["sorts"][k] for k, sign in keys)))
        elif base in ("_include", "_revinclude"):
            if base == "_include" and value in table["includes"]:
                translated.append((name, table["includes"][value]))
            else:
                unsupported.append(f"{name}={value}")
        elif base == "_summary" and value == "count":
            translated.append((name, value))
        elif base == "status" and not cut:
            statuses = [table["status"].get(v) for v in value.split(",")]
            if len(statuses) != 1 or statuses[0] is None:
                unsupported.append(f"{name}={value}")
                continue
            key, _, wanted = statuses[0].partition("=")
            translated.append((key, wanted))
        elif base in table["search_parameters"]:
            target = table["search_parameters"][base]
            if base == "patient" and not cut:  # `patient`: a subject that is a Patient
                value = ",".join(v if "/" in v else f"Patient/{v}" for v in value.split(","))
            elif base == "patient" and cut == ".":
                target, cut = target + ":Patient", "."
            translated.append((target + cut + rest, value))
        elif base in ("_format", "_pretty"):
            continue
        else:
            unsupported.append(name)
    return translated, unsupported


def _split_name(name: str) -> tuple[str, str, str]:
    """`subject:Patient.identifier` -> (`subject`, `:`, `Patient.identifier`)."""
    cuts = [i for i in (name.find(":"), name.find(".")) if i >= 0]
    if not cuts:
        return name, "", ""
    cut = min(cuts)
    return name[:cut], name[cut], name[cut + 1:]


__all__ = ["DOCUMENT", "NOTE", "is_note", "to_communication", "to_document_reference", "translate_search", "view_table"]
