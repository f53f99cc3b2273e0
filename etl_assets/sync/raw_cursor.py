"""A find cursor whose batches are lists of raw BSON documents, cut straight from the server's replies.

pymongo's `find_raw_batches` returns each batch as one byte string, but on the way it turns the
reply's batch array into one `RawBSONDocument` object per document, with the GIL held, on the
read-ahead thread, while the transform waits for the GIL. This cursor is pymongo's own, with only the
reply read differently: it slices each document out of the reply, and hands the transform the document
boundaries it needs anyway. pymongo keeps the protocol: each `getMore` and the `killCursors` of a
cursor closed early go to the server that answered the `find` (a URI with secondaries,
readPreference=secondaryPreferred, or several mongos hosts offers several).

A performance path. The simple path is `find_raw_batches` with each batch cut into documents again.
Measured with dev/fast_paths.py (full syncs of 200,000 products, each fast path swapped for its simple
path in turn; docs/benchmark.md, "Fast paths"): this cursor saves the sync 0.53 CPU-seconds cold and
0.48 warm, 8.7% and 5.6% of a full sync's wall time on a quiet machine. The test that it yields what
the simple path yields: etl_assets_tests/sync/test_raw_cursor.py::
test_batches_are_what_pymongos_raw_batches_hold. It overrides pymongo internals
(RawBatchCursor._unpack_response, _OpMsg.raw_command_response):
test_the_pymongo_internal_the_cursor_overrides_is_unchanged fails, naming what to re-check, when
pymongo changes them.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from typing import Any

from bson.raw_bson import RawBSONDocument
from pymongo.collection import Collection
from pymongo.cursor import RawBatchCursor
from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError

from etl_assets.sync.stores import StoreUnavailableError

_INT32 = struct.Struct("<i")
_INT64 = struct.Struct("<q")
_DOCUMENT, _ARRAY, _STRING, _INT32_TYPE, _INT64_TYPE = 0x03, 0x04, 0x02, 0x10, 0x12
# Value sizes of the fixed-size BSON types; the others are read from the value (see _value_end).
_FIXED_SIZES = {0x01: 8, 0x06: 0, 0x07: 12, 0x08: 1, 0x09: 8, 0x0A: 0, 0x10: 4, 0x11: 8, 0x12: 8,
                0x13: 16, 0x7F: 0, 0xFF: 0}


# Server errors meaning the cursor is gone while the store is fine: CursorNotFound (reaped, or asked of a
# server that never held it), QueryPlanKilled, CursorKilled, Interrupted. pymongo raises a node that
# stepped down or shuts down, and a broken connection, as a ConnectionFailure.
CURSOR_LOST_CODES = frozenset({43, 175, 237, 11601})


class MalformedReply(ValueError):
    """A server reply that is not the BSON a find or getMore returns."""


def _value_end(data: bytes, element_type: int, start: int) -> int:
    if element_type in _FIXED_SIZES:
        return start + _FIXED_SIZES[element_type]
    if element_type in (_DOCUMENT, _ARRAY, 0x0F):  # documents, arrays, code with scope: int32 total size
        return start + _INT32.unpack_from(data, start)[0]
    if element_type in (_STRING, 0x0D, 0x0E):  # string, JavaScript, symbol: int32 size, then the bytes
        return start + 4 + _INT32.unpack_from(data, start)[0]
    if element_type == 0x05:  # binary: int32 size, subtype byte, the bytes
        return start + 5 + _INT32.unpack_from(data, start)[0]
    if element_type == 0x0C:  # DBPointer: a string, then an ObjectId
        return start + 4 + _INT32.unpack_from(data, start)[0] + 12
    if element_type == 0x0B:  # regex: two cstrings
        return data.index(b"\x00", data.index(b"\x00", start) + 1) + 1
    raise MalformedReply(f"unknown BSON type {element_type:#04x} at byte {start}")


def _elements(data: bytes, start: int) -> Iterator[tuple[int, bytes, int]]:
    """(type, key, where the value starts) of each element of the document at `start`."""
    end = start + _INT32.unpack_from(data, start)[0] - 1  # the document's closing NUL
    position = start + 4
    while position < end:
        element_type = data[position]
        key_end = data.index(b"\x00", position + 1)
        value_end = _value_end(data, element_type, key_end + 1)
        yield element_type, data[position + 1:key_end], key_end + 1
        position = value_end


def _cursor_reply(reply: bytes) -> tuple[int, list[bytes]]:
    """The cursor id and the documents of a find or getMore reply."""
    cursor = next((start for kind, key, start in _elements(reply, 0) if key == b"cursor" and kind == _DOCUMENT),
                  None)
    if cursor is None:
        raise MalformedReply("the reply holds no cursor document")
    cursor_id, documents = None, None
    for kind, key, start in _elements(reply, cursor):
        if key == b"id" and kind == _INT64_TYPE:
            cursor_id = _INT64.unpack_from(reply, start)[0]
        elif key == b"id" and kind == _INT32_TYPE:  # MongoDB sends a long; a smaller id may come as an int
            cursor_id = _INT32.unpack_from(reply, start)[0]
        elif key in (b"firstBatch", b"nextBatch") and kind == _ARRAY:
            documents = _documents_of_array(reply, start)
    if cursor_id is None or documents is None:
        raise MalformedReply("the cursor document lacks its id or its batch")
    return cursor_id, documents


def _documents_of_array(data: bytes, start: int) -> list[bytes]:
    """The elements of the array at `start`, each a document, as their own bytes. (A loop of its own,
    not _elements: it runs once per document of every batch.)"""
    end = start + _INT32.unpack_from(data, start)[0] - 1
    documents, position = [], start + 4
    while position < end:
        if data[position] != _DOCUMENT:
            raise MalformedReply(f"a batch element of BSON type {data[position]:#04x}, not a document")
        value_start = data.index(b"\x00", position + 1) + 1
        position = value_start + _INT32.unpack_from(data, value_start)[0]
        documents.append(data[value_start:position])
    return documents


class _BatchCursor(RawBatchCursor):
    """pymongo's own find cursor, so pymongo keeps the protocol: it selects a server for the `find`,
    sends every `getMore` to the address that answered it, and sends `killCursors` there when the cursor
    is closed early. Only the reply is read differently: each item it yields is one batch, a list of
    raw documents cut from the reply (_cursor_reply), where pymongo's raw batches would build a
    RawBSONDocument per document first."""

    def _unpack_response(self, response: Any, cursor_id: int | None, codec_options: Any,
                         user_fields: Any = None, legacy_response: bool = False) -> list[Mapping[str, Any]]:
        reply = bytes(response.raw_command_response())
        # pymongo reads the fields around the cursor (ok, errors, $clusterTime) from this; decoded
        # only as deep as they are read, so the batch's documents are not decoded here.
        fields = RawBSONDocument(reply)
        if "cursor" not in fields:  # an error reply: pymongo raises it
            return [fields]
        cursor_id, documents = _cursor_reply(reply)
        batch = {"id": cursor_id, "firstBatch": [documents], "nextBatch": [documents]}
        return [{**fields, "cursor": batch}]


def _lost_cursor_reason(err: PyMongoError, batches: int) -> str | None:
    """Why the store failed the read, when a rerun may well succeed: it dropped the cursor, or could not
    be reached (a node stepped down or restarted, a connection broke). None for any other error."""
    if isinstance(err, OperationFailure) and err.code in CURSOR_LOST_CODES:
        details = err.details or {}
        cause = f"{details.get('codeName', f'error {err.code}')}: {details.get('errmsg', '')}"
    elif isinstance(err, ConnectionFailure):
        cause = f"{type(err).__name__}: {str(err).splitlines()[0]}"
    else:
        return None
    what = f"the cursor was lost after {batches} batch(es)" if batches else "the find failed"
    return f"{what} ({cause[:300]}); a rerun reads again"


def find_documents(collection: Collection, query: Mapping[str, Any], *, store: str, batch_size: int,
                   sort: list[tuple[str, int]] | None = None) -> Iterator[list[bytes]]:
    """Run `find` on the collection and yield each batch as a list of raw BSON documents. A cursor
    left open (the caller stopped early, or failed) is killed on its server. A cursor the store lost,
    and a store that cannot be reached, raise StoreUnavailableError naming `store`: the caller's retry
    runs the read again."""
    cursor = _BatchCursor(collection, dict(query), sort=sort, batch_size=batch_size)
    batches = 0
    try:
        while True:
            try:
                documents = next(cursor, None)
            except PyMongoError as err:
                reason = _lost_cursor_reason(err, batches)
                if reason is None:
                    raise
                raise StoreUnavailableError(store, reason) from err
            if documents is None:
                return
            batches += 1
            if documents:
                yield documents
    finally:
        cursor.close()
