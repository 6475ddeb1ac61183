"""The API process's start-up heap, moved out of the garbage collector's sight once serving.

By the time the API is ready, its process holds ~100,000 objects that live as long as it does:
the R4 digest, the resource models, the profiles and the installed guide. Every full collection
walks them all, every request in flight waiting on it: measured under the search bench's load
on 100k entries, 88–148 ms each, every 10–30 s. Frozen (`gc.freeze()`) after one last
collection, they are out of the next collections' walk: 7–34 ms on the same data
(bench/RESULTS.md, search, session 8).

Once, after start-up: what the requests create later stays under the collector as usual, so a
cycle of a finished request is freed. (The embedded database's process has a stronger policy,
storage/database_process.py, for a heap that grows with every write.)
"""

from __future__ import annotations

import gc


def freeze_start_up_heap() -> int:
    """Collect once, then freeze every object left: how many are now frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


__all__ = ["freeze_start_up_heap"]
