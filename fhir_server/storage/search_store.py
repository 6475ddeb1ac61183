"""The reads a search makes, on the current versions: a plan (a storage/filters.py filter) in,
documents out. The searcher decides what to ask; how it is asked of the database is here."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, Sequence

from fhir_server.storage.filters import Filter

Sort = Sequence[tuple[str, int]]


class SearchStore:
    def __init__(self, current_versions: Any):
        self._current = current_versions

    async def find(self, plan: Filter, fields: dict[str, Any] | None = None, sort: Sort | None = None,
                   limit: int | None = None) -> list[dict[str, Any]]:
        """The documents matching `plan` (whole, or only `fields`), in `sort` order, at most `limit`."""
        return [doc async for doc in self._cursor(plan, fields, sort, limit)]

    async def batches(self, plan: Filter, fields: dict[str, Any], sort: Sort, size: int) -> AsyncGenerator[list[dict[str, Any]], None]:
        """The matching documents in `sort` order, `size` at a time, from one cursor: memory holds
        a batch, whatever the number of matches (a bulk export's reading). Close it (aclosing)
        when leaving early: the cursor is closed with it."""
        cursor = self._current.find(plan, fields).sort(list(sort)).batch_size(size)
        try:
            batch: list[dict[str, Any]] = []
            async for doc in cursor:
                batch.append(doc)
                if len(batch) == size:
                    yield batch
                    batch = []
            if batch:
                yield batch
        finally:
            await cursor.close()

    async def count(self, plan: Filter) -> int:
        return int(await self._current.count_documents(plan))

    async def explain(self, plan: Filter, fields: dict[str, Any] | None = None, sort: Sort | None = None,
                      limit: int | None = None) -> dict[str, Any]:
        """The database's own account of how it would run `find` with these arguments."""
        return dict(await self._cursor(plan, fields, sort, limit).explain())

    def _cursor(self, plan: Filter, fields: dict[str, Any] | None, sort: Sort | None, limit: int | None) -> Any:
        cursor = self._current.find(plan, fields)
        if sort:
            cursor = cursor.sort(list(sort))
        return cursor if limit is None else cursor.limit(limit)


__all__ = ["SearchStore"]
