"""The entries of a transaction or batch Bundle as the engine reads them: the Bundle's type
and limits, each entry's request (method, target, conditions, resource), and errors that name
the entry they come from (`Bundle.entry[2]: …`)."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator

from fhir_server.engine.interactions import Engine, parse_etag
from fhir_server.outcome import FhirError
from fhir_server.storage.store import Version
from fhir_server.validation.structural import MAX_DEPTH, too_deep

LETTERS = {"POST": "c", "PUT": "u", "PATCH": "u", "DELETE": "d"}  # SMART v2 permission of each write
ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
WRITES = ("DELETE", "POST", "PUT", "PATCH")
EntryIndex = int | None  # an entry's place in its Bundle; None for a write sent on its own


@dataclass
class BundleRequest:
    """One entry of a transaction or batch, read and checked; or a single-resource write
    (engine/writes.py), which is a one-entry plan with no index (its errors name no entry)."""

    index: EntryIndex
    method: str
    url: str  # relative to the FHIR base, query included
    resource_type: str | None = None
    resource_id: str | None = None
    criteria: str | None = None  # the query of a conditional URL
    full_url: str | None = None
    resource: Any = None
    if_match: int | None = None
    if_none_exist: str | None = None
    if_none_match: str | None = None
    if_modified_since: str | None = None
    # for a PUT: the resource to write, from the stored one and the entry's (the HL7 bridge
    # keeps the care-team members a message does not name again); None: the entry's as it is
    merge: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]] | None = None
    # for a PATCH sent on its own: the kind of its body (patch.py); in a Bundle the entry's
    # resource tells (a Binary holding a JSON Patch, or Parameters)
    patch_kind: str | None = None

    @property
    def writes(self) -> bool:
        return self.method in WRITES


@dataclass
class EntryResult:
    """What one write entry did: its HTTP status, the version now current, or the error."""

    status: int
    version: Version | None = None
    error: FhirError | None = None
    deleted: tuple[Version, ...] = ()  # a DELETE's tombstones (several for a conditional delete)


@dataclass
class BundleLimits:
    """How far a Bundle may go, and how updates that change nothing are treated.

    `skip_unchanged`: a PUT whose resource equals the current version (meta.versionId and
    meta.lastUpdated aside) writes no new version and answers 200 with the current one. The
    HL7 bridge turns it on: a feed that sends the same practitioners with every message must
    not grow their history (nor make concurrent messages conflict on them)."""

    max_entries: int = 1_000
    delete_multiple: bool = False
    skip_unchanged: bool = False


def read_bundle(body: Any, limits: BundleLimits) -> tuple[str, list[Any]]:
    """The Bundle's type (transaction / batch) and its raw entries; 400 / 413 otherwise."""
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        raise FhirError.of(400, "invalid", "POST to the base takes a Bundle of type transaction or batch", "resourceType")
    kind = body.get("type")
    if kind not in ("transaction", "batch"):
        raise FhirError.of(400, "invalid", f"The Bundle type must be transaction or batch, not {str(kind)[:30]!r}", "Bundle.type")
    entries = body.get("entry", [])
    if not isinstance(entries, list):
        raise FhirError.of(400, "structure", "Bundle.entry must be an array", "Bundle.entry")
    if len(entries) > limits.max_entries:
        raise FhirError.of(
            413, "too-costly",
            f"The Bundle has {len(entries)} entries; the limit is {limits.max_entries}: split it into several Bundles",
            "Bundle.entry",
        )
    return kind, entries


def read_request(index: int, entry: Any, engine: Engine, base_url: str) -> BundleRequest:
    """One entry's request; errors name the entry."""
    with blame(index):
        return _read_request(index, entry, engine, base_url)


def _read_request(index: int, entry: Any, engine: Engine, base_url: str) -> BundleRequest:
    if not isinstance(entry, dict) or not isinstance(entry.get("request"), dict):
        raise FhirError.of(400, "required", "every entry needs a request (method and url)", "request")
    request = entry["request"]
    method, url = request.get("method"), request.get("url")
    if not isinstance(method, str) or method not in ORDER or not isinstance(url, str) or not url.strip():
        raise FhirError.of(400, "invalid", "request.method must be GET, HEAD, POST, PUT, DELETE or PATCH, with a url", "request")
    full_url = entry.get("fullUrl")
    parsed = BundleRequest(
        index=index,
        method=method,
        url=relative_url(url.strip(), base_url),
        full_url=full_url if isinstance(full_url, str) and full_url else None,
        resource=entry.get("resource"),
        if_none_exist=_text(request, "ifNoneExist"),
        if_none_match=_text(request, "ifNoneMatch"),
        if_modified_since=_text(request, "ifModifiedSince"),
    )
    if too_deep(parsed.resource):
        raise FhirError.of(422, "too-costly", f"the resource nests deeper than {MAX_DEPTH} levels", "resource")
    if_match = _text(request, "ifMatch")
    if if_match is not None:
        parsed.if_match = parse_etag(if_match)
        if parsed.if_match is None:
            raise FhirError.of(412, "conflict", f"ifMatch {if_match[:40]!r} names no version: use W/\"<versionId>\"", "request.ifMatch")
    if parsed.writes:
        _read_target(parsed, engine)
    return parsed


def _read_target(request: BundleRequest, engine: Engine) -> None:
    path, _, query = request.url.partition("?")
    parts = [p for p in path.split("/") if p]
    if not parts:
        raise FhirError.of(400, "invalid", f"{request.method} needs a resource type in its url", "request.url")
    engine.check_type(parts[0])
    engine.check_allowed(parts[0], LETTERS[request.method])
    request.resource_type = parts[0]
    if request.method == "POST":
        if len(parts) != 1 or query:
            raise FhirError.of(400, "invalid", "a POST entry's url is the resource type alone", "request.url")
    elif len(parts) == 2 and not query:
        engine.check_id(parts[1])
        request.resource_id = parts[1]
    elif len(parts) == 1 and query:
        request.criteria = query
    else:
        raise FhirError.of(400, "invalid", f"a {request.method} entry's url is Type/id or Type?criteria", "request.url")
    if request.method in ("POST", "PUT", "PATCH") and not isinstance(request.resource, dict):
        raise FhirError.of(400, "required", f"a {request.method} entry needs a resource", "resource")


def relative_url(url: str, base_url: str) -> str:
    """A request url relative to our base; 400 for one that points at another server."""
    if "://" in url.split("?", 1)[0]:  # a query may hold urls: `Patient?identifier=http://x|1`
        if not url.startswith(base_url.rstrip("/") + "/"):
            raise FhirError.of(400, "invalid", "the url points at another server", "request.url")
        url = url[len(base_url.rstrip("/")) + 1 :]
    return url.lstrip("/")


def _text(request: dict[str, Any], name: str) -> str | None:
    value = request.get(name)
    return value if isinstance(value, str) and value else None


# -- errors that name their entry -------------------------------------------------------------


def entry_error(index: EntryIndex, error: FhirError) -> FhirError:
    """The error of entry `index`, its issues pointing into the Bundle (None: a write sent on
    its own, whose errors stay as they are)."""
    if index is None:
        return error
    prefix = f"Bundle.entry[{index}]"
    issues = []
    for issue in error.issues:
        if issue.diagnostics.startswith(prefix):
            issues.append(issue)
            continue
        expression = _within_entry(prefix, issue.expression)
        issues.append(replace(issue, diagnostics=f"{prefix}: {issue.diagnostics}", expression=expression))
    return FhirError(error.status, issues, error.headers)


def _within_entry(prefix: str, expression: str | None) -> str:
    """An issue's location inside the Bundle: Patient.name[0] -> Bundle.entry[i].resource.name[0]."""
    if not expression:
        return prefix
    if expression.startswith("Bundle"):
        return expression
    head, _, rest = expression.partition(".")
    if head[:1].isupper() or head == "resourceType":  # a location inside the entry's resource
        inner = rest if head[:1].isupper() else expression
        return f"{prefix}.resource" + (f".{inner}" if inner else "")
    return f"{prefix}.{expression}"


@contextmanager
def blame(index: EntryIndex) -> Iterator[None]:
    try:
        yield
    except FhirError as error:
        raise entry_error(index, error) from None


__all__ = ["BundleLimits", "BundleRequest", "EntryIndex", "EntryResult", "LETTERS", "ORDER", "WRITES", "blame", "entry_error", "read_bundle",
           "read_request", "relative_url"]
