import threading

import pytest

from etl_assets.sync.streams import batched, read_ahead, transform_then_load


def test_batched_keeps_the_short_last_batch():
    assert list(batched(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]


def test_read_ahead_yields_in_order_and_raises_the_sources_error():
    def source():
        yield from (1, 2, 3)
        raise RuntimeError("source went away")

    seen = []
    with pytest.raises(RuntimeError, match="source went away"):
        for item in read_ahead(source()):
            seen.append(item)
    assert seen == [1, 2, 3]


def test_transform_then_load_loads_in_order_in_one_writer_thread():
    writers = set()

    def load(item):
        writers.add(threading.current_thread().name)
        return item * 10

    out = list(transform_then_load(iter(range(6)), lambda n: n + 1, load, thread_name="test-load"))
    assert out == [(n + 1, (n + 1) * 10) for n in range(6)]
    assert len(writers) == 1 and writers.pop().startswith("test-load")


def test_a_failed_load_raises_and_the_loads_queued_behind_it_never_run():
    release = threading.Event()
    loaded = []

    def load(item):
        if item == 2:
            release.wait(5)  # hold the writer until the batches behind are queued
            raise ValueError("batch 2 refused")
        loaded.append(item)
        return item

    def transform(item):
        if item == 4:  # queued: 3 and 4 now wait behind the failing load of 2
            release.set()
        return item

    with pytest.raises(ValueError, match="batch 2 refused"):
        list(transform_then_load(iter(range(10)), transform, load, thread_name="test-load", queued=2))
    assert loaded == [0, 1]
