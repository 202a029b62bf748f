"""The de-duplicating work queue (no cluster)."""

from __future__ import annotations

import asyncio

from rollout_operator.workqueue import WorkQueue


async def test_keys_are_deduplicated_and_never_processed_twice_at_once() -> None:
    q = WorkQueue("t")
    q.add("a")
    q.add("a")
    q.add("b")
    assert q.depth() == 2
    key = await q.get()
    assert key == "a"
    q.add("a")  # changed while being processed: once more, afterwards
    assert q.depth() == 1
    assert await q.get() == "b"
    q.done("b")
    q.done("a")
    assert q.depth() == 1 and await q.get() == "a"


async def test_add_after_keeps_the_earliest_timer() -> None:
    q = WorkQueue("t")
    q.add_after("a", 5.0)
    q.add_after("a", 0.01)
    q.add_after("a", 10.0)
    await asyncio.sleep(0.05)
    assert q.depth() == 1
    q.close()


def test_backoff_grows_and_resets() -> None:
    q = WorkQueue("t")
    delays = [q.backoff("k") for _ in range(10)]
    assert delays[0] == 0.5 and delays[1] == 1.0 and delays[-1] == 60.0
    q.forget("k")
    assert q.backoff("k") == 0.5
