"""Dynamic batching: concurrent requests' items join one model call, as infinity-emb and TEI batch.

A request puts its items in the queue and awaits them. One worker task takes whatever has arrived within
`window_ms` of the first item (up to `max_batch` items, a request's items never split across calls of different
keys), runs the model call in a single worker thread (off the event loop; one model call at a time), and hands
each request its slice of the results.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Sequence


@dataclass
class _Job:
    key: Hashable  # items with different keys (say, query and document prompts) never share a call
    items: list
    future: asyncio.Future
    queued: float = field(default_factory=time.perf_counter)


class Batcher:
    """`await batcher.run(key, items)` returns `call(key, items)` for these items, computed with others'."""

    def __init__(self, call: Callable[[Hashable, list], Sequence[Any]], window_ms: float, max_batch: int,
                 executor: ThreadPoolExecutor, observe: Callable[[int], None] | None = None):
        self.call, self.window, self.max_batch = call, window_ms / 1000, max_batch
        self.executor, self.observe = executor, observe
        self.queue: asyncio.Queue[_Job] | None = None
        self._worker: asyncio.Task | None = None

    async def run(self, key: Hashable, items: list) -> list:
        if not items:
            return []
        if self.queue is None:  # created on the server's event loop, at the first request
            self.queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._work())
        job = _Job(key, list(items), asyncio.get_running_loop().create_future())
        await self.queue.put(job)
        return await job.future

    async def _gather(self) -> list[_Job]:
        first = await self.queue.get()
        jobs, size = [first], len(first.items)
        deadline = first.queued + self.window
        held: list[_Job] = []
        while size < self.max_batch:
            remaining = deadline - time.perf_counter()
            if remaining <= 0 and self.queue.empty():
                break
            try:
                job = await asyncio.wait_for(self.queue.get(), timeout=max(remaining, 0)) if remaining > 0 \
                    else self.queue.get_nowait()
            except (asyncio.TimeoutError, asyncio.QueueEmpty):
                break
            if job.key != first.key or size + len(job.items) > self.max_batch and size:
                held.append(job)  # next call's
                break
            jobs.append(job)
            size += len(job.items)
        for job in held:
            self.queue.put_nowait(job)
        return jobs

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._gather()
            live = [j for j in jobs if not j.future.cancelled()]  # a client that left costs no model time
            if not live:
                continue
            items = [item for job in live for item in job.items]
            if self.observe:
                self.observe(len(items))
            try:
                results = await loop.run_in_executor(self.executor, self.call, live[0].key, items)
            except Exception as exc:  # noqa: BLE001 - every waiting request gets the failure, the worker goes on
                for job in live:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            start = 0
            for job in live:
                if not job.future.done():
                    job.future.set_result(list(results[start:start + len(job.items)]))
                start += len(job.items)
