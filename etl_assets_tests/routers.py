"""A sharded-cluster topology made of real servers: each secantusdb sits behind a small TCP proxy that
forwards every message unchanged except the `hello` replies, which it rewrites into a mongos router's
(`msg: "isdbgrid"`, no replica-set fields). A client given both proxies' addresses then chooses a
server for every operation, as it does with several mongos hosts (or secondaries) in its URI; only an
operation pinned to an address (a cursor's getMore and killCursors) goes where it is sent."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable, Sequence
from typing import Any

import bson

_HEADER = struct.Struct("<iiii")  # messageLength, requestID, responseTo, opCode
_OP_REPLY, _OP_QUERY, _OP_MSG = 1, 2004, 2013
_HELLO_COMMANDS = {b"hello", b"isMaster", b"ismaster"}
# What only a replica-set member reports; a router reports none of it.
_REPLICA_SET_FIELDS = ("setName", "setVersion", "hosts", "passives", "arbiters", "secondary", "primary",
                       "me", "electionId", "lastWrite")


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    chunks, remaining = [], size
    while remaining:
        chunk = sock.recv(min(remaining, 1 << 20))
        if not chunk:
            raise ConnectionError("peer closed")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _read_message(sock: socket.socket) -> tuple[tuple[int, int, int, int], bytes]:
    header = _read_exactly(sock, _HEADER.size)
    fields = _HEADER.unpack(header)
    return fields, _read_exactly(sock, fields[0] - _HEADER.size)


def _first_key(document: bytes) -> bytes:
    return document[5:document.index(b"\x00", 5)]


def _command_document(op_code: int, body: bytes) -> bytes | None:
    if op_code == _OP_MSG and body[4] == 0:  # flagBits, then a kind-0 section: the command
        return body[5:]
    if op_code == _OP_QUERY:  # flags, fullCollectionName, numberToSkip, numberToReturn, query
        return body[body.index(b"\x00", 4) + 9:]
    return None


def _as_router(reply: dict[str, Any]) -> dict[str, Any]:
    router = {key: value for key, value in reply.items() if key not in _REPLICA_SET_FIELDS}
    router["msg"] = "isdbgrid"
    return router


def _rewritten_reply(header: tuple[int, int, int, int], body: bytes) -> bytes:
    _, request_id, response_to, op_code = header
    if op_code == _OP_MSG:
        prefix, document = body[:5], body[5:]
    elif op_code == _OP_REPLY:
        prefix, document = body[:20], body[20:]
    else:
        raise ValueError(f"unexpected reply opCode {op_code}")
    new_body = prefix + bson.encode(_as_router(bson.decode(document)))
    return _HEADER.pack(_HEADER.size + len(new_body), request_id, response_to, op_code) + new_body


class RouterProxy:
    """Listens on 127.0.0.1 and forwards each connection to the server on `backend_port`, dressed as a
    mongos router."""

    def __init__(self, backend_port: int):
        self.backend_port = backend_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name=f"router-{self.port}").start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            backend = socket.create_connection(("127.0.0.1", self.backend_port))
            self._sockets += [client, backend]
            hello_requests: set[int] = set()
            threading.Thread(target=self._requests, args=(client, backend, hello_requests), daemon=True).start()
            threading.Thread(target=self._replies, args=(backend, client, hello_requests), daemon=True).start()

    def _requests(self, client: socket.socket, backend: socket.socket, hello_requests: set[int]) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while True:
                header, body = _read_message(client)
                command = _command_document(header[3], body)
                if command is not None and _first_key(command) in _HELLO_COMMANDS:
                    hello_requests.add(header[1])
                backend.sendall(_HEADER.pack(*header) + body)
        self._close_pair(client, backend)

    def _replies(self, backend: socket.socket, client: socket.socket, hello_requests: set[int]) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while True:
                header, body = _read_message(backend)
                if header[2] in hello_requests:
                    hello_requests.discard(header[2])
                    client.sendall(_rewritten_reply(header, body))
                else:
                    client.sendall(_HEADER.pack(*header) + body)
        self._close_pair(client, backend)

    @staticmethod
    def _close_pair(*sockets: socket.socket) -> None:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self._close_pair(*self._sockets)


def routers_uri(proxies: Sequence[RouterProxy]) -> str:
    """A URI naming every router, polled (no streaming hello through the proxies)."""
    return f"mongodb://{','.join(p.address for p in proxies)}/?serverMonitoringMode=poll"


def alternating_selector() -> Callable[[list[Any]], list[Any]]:
    """A `server_selector` that never picks the server it picked last time while another one is
    selectable: a command that selects a server again lands elsewhere."""
    last: list[Any] = []

    def select(servers: list[Any]) -> list[Any]:
        others = [server for server in servers if [server.address] != last]
        if not others:
            return servers
        chosen = min(others, key=lambda server: server.address)
        last[:] = [chosen.address]
        return [chosen]

    return select
