"""Streaming helpers shared by the syncs: batching and read-ahead."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def read_ahead(batches: Iterator[T], depth: int = 2) -> Iterator[T]:
    """Fetch the next batches in a thread while the caller works on the current one.

    Drivers release the GIL while they wait on the network, so the source server streams the next
    batch while this process transforms and loads. At most `depth` batches wait in memory.
    """
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for batch in batches:
                if stop.is_set():
                    return
                buffer.put(batch)
            buffer.put(_DONE)
        except BaseException as err:  # handed to the consumer, which re-raises it
            buffer.put(err)

    worker = threading.Thread(target=produce, name="read-ahead", daemon=True)
    worker.start()
    try:
        while (item := buffer.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full buffer
            try:
                buffer.get_nowait()
            except queue.Empty:
                worker.join(timeout=0.05)
