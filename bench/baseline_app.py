"""The baseline of bench/rest_crud.py: the least a FastAPI + PyMongo server can do.

GET /Patient/{id}: `find_one` by `_id`, return the stored bytes.
POST /Patient: store the body's bytes in two collections (current + history) in one
transaction and return them. No validation, no versioning, no ETag: the floor to compare to.
"""

from __future__ import annotations

import argparse
import uuid
from contextlib import asynccontextmanager
from typing import AsyncIterator

import uvicorn
from bson import Binary
from fastapi import FastAPI, Request, Response
from pymongo import AsyncMongoClient


def build(uri: str, database: str) -> FastAPI:
    state: dict[str, object] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client: AsyncMongoClient = AsyncMongoClient(uri)
        state["client"] = client
        state["db"] = client[database]
        yield
        await client.close()

    app = FastAPI(lifespan=lifespan)

    @app.get("/Patient/{resource_id}")
    async def read(resource_id: str) -> Response:
        doc = await state["db"].current.find_one({"_id": resource_id}, {"raw": 1})  # type: ignore[union-attr]
        if doc is None:
            return Response(status_code=404)
        return Response(bytes(doc["raw"]), media_type="application/fhir+json")

    @app.post("/Patient")
    async def create(request: Request) -> Response:
        raw = await request.body()
        resource_id = str(uuid.uuid4())
        client: AsyncMongoClient = state["client"]  # type: ignore[assignment]
        db = state["db"]

        async def write(session) -> None:  # with_transaction retries transient errors, as any client should
            await db.current.insert_one({"_id": resource_id, "raw": Binary(raw)}, session=session)  # type: ignore[union-attr]
            await db.history.insert_one({"_id": f"{resource_id}/1", "raw": Binary(raw)}, session=session)  # type: ignore[union-attr]

        async with client.start_session() as session:
            await session.with_transaction(write)
        return Response(raw, status_code=201, media_type="application/fhir+json", headers={"Location": f"/Patient/{resource_id}"})

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--uri", required=True)
    parser.add_argument("--database", default="bench_baseline")
    args = parser.parse_args()
    uvicorn.run(build(args.uri, args.database), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
