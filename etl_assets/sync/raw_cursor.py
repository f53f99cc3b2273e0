"""A find cursor whose batches are lists of raw BSON documents, cut straight from the server's replies.

pymongo's `find_raw_batches` returns each batch as one byte string, but on the way it turns the
reply's batch array into one `RawBSONDocument` object per document, with the GIL held: about 0.45
CPU-seconds per 200,000 products, on the read-ahead thread, while the transform waits for the GIL.
This cursor sends the same `find` and `getMore` commands in one session and slices each document
out of the reply, and hands the transform the document boundaries it needs anyway.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from contextlib import suppress
from typing import Any

from bson.codec_options import CodecOptions
from bson.int64 import Int64
from bson.raw_bson import RawBSONDocument
from pymongo.collection import Collection
from pymongo.errors import PyMongoError

_RAW_REPLY = CodecOptions(document_class=RawBSONDocument)
_INT32 = struct.Struct("<i")
_INT64 = struct.Struct("<q")
_DOCUMENT, _ARRAY, _STRING, _INT32_TYPE, _INT64_TYPE = 0x03, 0x04, 0x02, 0x10, 0x12
# Value sizes of the fixed-size BSON types; the others are read from the value (see _value_end).
_FIXED_SIZES = {0x01: 8, 0x06: 0, 0x07: 12, 0x08: 1, 0x09: 8, 0x0A: 0, 0x10: 4, 0x11: 8, 0x12: 8,
                0x13: 16, 0x7F: 0, 0xFF: 0}


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


def find_documents(collection: Collection, query: Mapping[str, Any], *, batch_size: int,
                   sort: list[tuple[str, int]] | None = None) -> Iterator[list[bytes]]:
    """Run `find` on the collection and yield each batch as a list of raw BSON documents. A cursor
    left open (the caller stopped early, or failed) is killed."""
    database = collection.database
    find: dict[str, Any] = {"find": collection.name, "filter": query, "batchSize": batch_size}
    if sort:
        find["sort"] = dict(sort)
    with database.client.start_session(causal_consistency=False) as session:

        def command(body: dict[str, Any]) -> tuple[int, list[bytes]]:
            reply = database.command(body, codec_options=_RAW_REPLY, session=session,
                                     read_preference=collection.read_preference)
            return _cursor_reply(reply.raw)

        cursor_id, documents = command(find)
        try:
            while True:
                if documents:
                    yield documents
                if not cursor_id:
                    return
                cursor_id, documents = command(
                    {"getMore": Int64(cursor_id), "collection": collection.name, "batchSize": batch_size})
        finally:
            if cursor_id:
                with suppress(PyMongoError):  # the server reaps idle cursors anyway
                    database.command({"killCursors": collection.name, "cursors": [Int64(cursor_id)]},
                                     session=session)
