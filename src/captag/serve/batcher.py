"""Micro-batching: items of concurrent requests are queued, and one worker runs them together.

The worker takes the first queued item, then collects more until the batch is full or the first
item has waited `max_wait_s`; it runs one prediction on the batch in a thread of its own (off the
event loop) and resolves each item's future. Under concurrency, throughput approaches that of
batched prediction; a lone request waits at most `max_wait_s` more.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable


@dataclass
class _Item:
    image: Any
    caption: str
    future: asyncio.Future
    queued: float


class MicroBatcher:
    """Joins items submitted from concurrent requests into calls of `predict(images, captions)`."""

    def __init__(self, predict: Callable[[list, list], list], max_batch: int = 32,
                 max_wait_s: float = 0.005):
        self.predict = predict
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="captag-predict")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self.batches = self.items = 0  # model calls made, items predicted

    async def submit(self, images: list, captions: list[str]) -> list:
        """The results for these items, in order, once their batches have run."""
        loop = asyncio.get_running_loop()
        queue = self._start(loop)
        futures = []
        for image, caption in zip(images, captions):
            future = loop.create_future()
            queue.put_nowait(_Item(image, caption, future, loop.time()))
            futures.append(future)
        return list(await asyncio.gather(*futures))

    def _start(self, loop: asyncio.AbstractEventLoop) -> asyncio.Queue:
        """The queue of this event loop, with its worker running (one per loop)."""
        if self._loop is not loop or self._task is None or self._task.done():
            self._loop, self._queue = loop, asyncio.Queue()
            self._task = loop.create_task(self._work(self._queue))
        return self._queue

    async def _work(self, queue: asyncio.Queue) -> None:
        while True:
            await self._run(await self._collect(queue))

    async def _collect(self, queue: asyncio.Queue) -> list[_Item]:
        batch = [await queue.get()]
        deadline = batch[0].queued + self.max_wait_s
        loop = asyncio.get_running_loop()
        while len(batch) < self.max_batch:
            if not queue.empty():
                batch.append(queue.get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _run(self, batch: list[_Item]) -> None:
        live = [item for item in batch if not item.future.done()]
        if not live:
            return
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self._executor, self.predict,
                                                 [i.image for i in live], [i.caption for i in live])
        except Exception as error:
            results = [error] * len(live)
        self.batches, self.items = self.batches + 1, self.items + len(live)
        for item, result in zip(live, results):
            if item.future.done():
                continue
            if isinstance(result, Exception):
                item.future.set_exception(result)
            else:
                item.future.set_result(result)

    async def close(self) -> None:
        """Stop the worker (a later `submit` starts it again)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
