"""The liaison notebook web app at `/app/`: static files (read once at start), and `guide.json`,
the entry kinds and profiles it uses, taken from the guide so the app and the profiles never
disagree.

The app is a SMART-on-FHIR client of the public API like any other: these routes serve no
patient data. Each file is served with a Content-Security-Policy that lets the page run only
its own scripts (the inline import map is allowed by its hash) and talk only to this origin.
"""

from __future__ import annotations

import base64
import hashlib
import mimetypes
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from fhir_server.ig import PROFILES_DIR
from fhir_server.ig.entry_kinds import entry_kinds
from fhir_server.outcome import FhirError

STATIC_DIR = Path(__file__).resolve().parent / "static"
INDEX = "index.html"
IMPORT_MAP = re.compile(rb'<script type="importmap">(.*?)</script>', re.S)
TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".html": "text/html; charset=utf-8",
         ".json": "application/json", ".svg": "image/svg+xml", ".png": "image/png", ".txt": "text/plain; charset=utf-8"}
GUIDE = "guide.json"


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    content_type: str
    etag: str


def _policy(index: bytes) -> str:
    """The page's CSP: its own scripts, plus the inline import map by its SHA-256."""
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(m).digest()).decode()}'" for m in IMPORT_MAP.findall(index))
    return ("default-src 'none'; script-src 'self' " + hashes + "; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")


def guide_summary(profiles: Path = PROFILES_DIR) -> dict[str, Any]:
    """What the app needs of the guide (`/app/guide.json`): the entry kinds, the profiles its
    writes claim, and the care-team roles' French names."""
    url = lambda name: orjson.loads((profiles / f"StructureDefinition-{name}.json").read_bytes())["url"]  # noqa: E731
    roles = orjson.loads((profiles / "CodeSystem-care-team-role.json").read_bytes())
    return {"kinds": entry_kinds(profiles), "profiles": {"entry": url("notebook-entry"), "receipt": url("notebook-acknowledgement")},
            "roles": {"system": roles["url"], "display": {c["code"]: c.get("display", c["code"]) for c in roles["concept"]}}}


def _load(folder: Path) -> dict[str, StaticFile]:
    files: dict[str, StaticFile] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = path.relative_to(folder).as_posix()
        body = path.read_bytes()
        content_type = TYPES.get(path.suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"
        files[name] = StaticFile(body, content_type, f'"{hashlib.sha256(body).hexdigest()[:32]}"')
    guide = orjson.dumps(guide_summary())
    files[GUIDE] = StaticFile(guide, "application/json", f'"{hashlib.sha256(guide).hexdigest()[:32]}"')
    return files


class WebApp:
    """The files of the app, keyed by their path under /app/ (nothing outside is reachable)."""

    def __init__(self, folder: Path = STATIC_DIR):
        self.files = _load(folder)
        self.policy = _policy(self.files[INDEX].body)

    def response(self, name: str, request: Request) -> Response:
        found = self.files.get(name or INDEX)
        if found is None:
            raise FhirError.of(404, "not-found", f"No file /app/{name[:80]} in the notebook app")
        headers = {"ETag": found.etag, "Cache-Control": "no-cache", "Content-Security-Policy": self.policy}
        if request.headers.get("if-none-match") == found.etag:
            return Response(status_code=304, headers=headers)
        return Response(found.body, 200, headers=headers, media_type=found.content_type)


WEB_APP = WebApp()


async def app_root(request: Request) -> Response:
    """`/app` → `/app/` (relative URLs in the page resolve under the folder)."""
    return RedirectResponse("/app/", status_code=308)


async def app_file(request: Request) -> Response:
    return WEB_APP.response(request.path_params.get("path", ""), request)


__all__ = ["WEB_APP", "WebApp", "app_file", "app_root", "guide_summary"]
