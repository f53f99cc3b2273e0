"""Streaming helpers shared by the syncs: batching, read-ahead, and the transform-then-load pipeline."""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
Transformed = TypeVar("Transformed")
Loaded = TypeVar("Loaded")
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


def transform_then_load(batches: Iterator[T], transform: Callable[[T], Transformed],
                        load: Callable[[Transformed], Loaded], *, thread_name: str,
                        queued: int = 2) -> Iterator[tuple[Transformed, Loaded]]:
    """Three stages that overlap: the source streams the next batches (read_ahead), this thread
    transforms, and one writer thread loads, in order. Yields (transformed, loaded) as each load ends.

    Up to `queued` transformed batches wait for the writer, so a slow commit does not stall the
    transform. If a load fails, the loads queued behind it are cancelled and its error raised here.
    """
    writer = ThreadPoolExecutor(1, thread_name)
    pending: deque[tuple[Transformed, Future[Loaded]]] = deque()
    failed = threading.Event()

    def load_unless_failed(transformed: Transformed) -> Loaded:
        if failed.is_set():  # set by an earlier load on this same thread: nothing runs after a failure
            raise CancelledError
        try:
            return load(transformed)
        except BaseException:
            failed.set()
            raise

    try:
        for batch in read_ahead(batches):
            transformed = transform(batch)
            pending.append((transformed, writer.submit(load_unless_failed, transformed)))
            if len(pending) > queued:
                done, loading = pending.popleft()
                yield done, loading.result()
        while pending:
            done, loading = pending.popleft()
            yield done, loading.result()
    finally:
        writer.shutdown(wait=True, cancel_futures=True)
