"""Helpers of the `$export` tests: kick off, wait for the manifest, read the files."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson

ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}


async def kick_off(client: httpx.AsyncClient, url: str, headers: dict[str, str] | None = None,
                   parameters: list[dict[str, Any]] | None = None) -> str:
    """The status URL of an accepted export (a POST with Parameters when `parameters` is given)."""
    asked = {**ASYNC, **(headers or {})}
    if parameters is None:
        response = await client.get(url, headers=asked)
    else:
        response = await client.post(url, headers=asked, json={"resourceType": "Parameters", "parameter": parameters})
    assert response.status_code == 202, response.text
    location = response.headers["content-location"]
    assert location.startswith("http://") and "/$export-status/" in location
    return location


async def manifest(client: httpx.AsyncClient, status_url: str, headers: dict[str, str] | None = None,
                   timeout: float = 120) -> dict[str, Any]:
    """Poll until the export is done: 202 with X-Progress and Retry-After meanwhile."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        response = await client.get(status_url, headers=headers)
        if response.status_code != 202:
            break
        assert response.headers["x-progress"] and int(response.headers["retry-after"]) > 0
        assert asyncio.get_running_loop().time() < deadline, "the export did not finish"
        await asyncio.sleep(0.05)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json") and response.headers["expires"]
    return dict(response.json())


async def exported(client: httpx.AsyncClient, body: dict[str, Any], headers: dict[str, str] | None = None,
                   part: str = "output") -> dict[str, list[dict[str, Any]]]:
    """The resources of a manifest's files, by type (checking each file's count)."""
    found: dict[str, list[dict[str, Any]]] = {}
    for item in body[part]:
        response = await client.get(item["url"], headers=headers)
        assert response.status_code == 200 and response.headers["content-type"].startswith("application/fhir+ndjson")
        resources = [orjson.loads(line) for line in response.content.splitlines()]
        assert len(resources) == item["count"]
        assert all(r["resourceType"] == item["type"] for r in resources)
        found.setdefault(item["type"], []).extend(resources)
    return found


def ids(found: dict[str, list[dict[str, Any]]]) -> set[str]:
    return {f"{r['resourceType']}/{r['id']}" for resources in found.values() for r in resources}


__all__ = ["ASYNC", "exported", "ids", "kick_off", "manifest"]
