"""Links between the node servers of one machine: batches of events forwarded to their owner
over a Unix socket, not a Ray call.

A message that reaches a node server whose host does not own its partition goes to the owner
(:mod:`parlour.actors.dispatch` batches it). Between two processes of one machine a Ray actor
call costs what the turn itself costs (a task submitted through the core worker, gRPC, the
reply back): measured on this project's 2-core machine, a forwarded message cost ~0.8 ms of
server CPU against ~0.4 ms for one run in-process, and two node servers served fewer turns than
one. A link is a stream socket carrying the same :mod:`parlour.wire` bytes, framed:

    frame   = length (4 bytes, big-endian) + msgpack [call id, payload bytes]
    request = payload: a batch (:func:`~parlour.wire.encode_batch`)
    answer  = payload: its outcomes (:func:`~parlour.wire.encode_outcomes`), same call id

Calls are multiplexed on one connection per peer; each is answered when its batch commits.
The socket lives in a folder only this user may enter (0700): whoever can write to it can put
events in any conversation, as the hosts' Ray calls can.

>>> server = LinkServer(path, host.deliver)      # in the owner
>>> await server.start()
>>> link = Link(path, "parlour-server-1")        # in a peer
>>> outcomes = await link.deliver(batch)
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import os
import struct
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgpack

from parlour.errors import Unavailable
from parlour.messages import Inbound, Outcome
from parlour.wire import decode_batch, encode_outcomes, send_batch

log = logging.getLogger("parlour.links")

HEADER = struct.Struct(">I")
MAX_FRAME = 256 * 1024 * 1024
"""No frame is larger: a batch is at most ``max_batch`` messages of at most the body limit each."""

DeliverFn = Callable[[list[Inbound]], Awaitable[list[Outcome]]]


def link_folder(key: str) -> Path:
    """The folder of one runtime's sockets (``key`` names the runtime: its store and prefix),
    made 0700. Short, so that a socket's path stays under the 107 bytes Linux allows."""
    digest = hashlib.blake2b(key.encode(), digest_size=6).hexdigest()
    folder = Path(tempfile.gettempdir()) / f"parlour-{os.getuid()}" / digest
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    for path in (folder.parent, folder):
        if path.stat().st_uid != os.getuid() or path.stat().st_mode & 0o077:
            path.chmod(0o700)  # PermissionError if it is someone else's: the server does not start
    return folder


async def _read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    (size,) = HEADER.unpack(await reader.readexactly(HEADER.size))
    if size > MAX_FRAME:
        raise ConnectionError(f"a frame of {size} bytes (the most is {MAX_FRAME})")
    call, payload = msgpack.unpackb(await reader.readexactly(size), use_list=False)
    return call, payload


def _frame(call: int, payload: bytes) -> bytes:
    body = msgpack.packb([call, payload], use_bin_type=True)
    return HEADER.pack(len(body)) + body


class LinkServer:
    """Serves ``deliver`` (a host's) to the peers that connect to ``path``."""

    def __init__(self, path: Path, deliver: DeliverFn):
        self.path, self.deliver = path, deliver
        self._server: asyncio.Server | None = None
        self._calls: set[asyncio.Task] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a socket left by this server's previous process
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        self.path.chmod(0o600)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                call, payload = await _read_frame(reader)
                task = asyncio.create_task(self._answer(writer, call, payload))
                self._calls.add(task)
                task.add_done_callback(self._calls.discard)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, TypeError) as exc:
            if not isinstance(exc, asyncio.IncompleteReadError) or exc.partial:
                log.warning("a link's peer sent what is not a frame, closing it: %s", exc)
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _answer(self, writer: asyncio.StreamWriter, call: int, payload: bytes) -> None:
        try:
            answer = encode_outcomes(await self.deliver(decode_batch(payload)))
        except Exception:  # noqa: BLE001 - the peer must hear of it: its calls on this connection fail
            log.exception("a forwarded batch failed; closing the link it came on")
            writer.close()
            return
        if not writer.is_closing():
            writer.write(_frame(call, answer))

    async def close(self) -> None:
        """Stop taking calls; those in hand finish (their batches commit and are answered)."""
        if self._server is not None:
            self._server.close()
        await asyncio.gather(*self._calls, return_exceptions=True)
        for writer in list(self._writers):
            writer.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class _Connection:
    """One connection to a peer, and the calls waiting on it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str):
        self.writer, self.peer = writer, peer
        self.waiting: dict[int, asyncio.Future] = {}
        self.reading = asyncio.create_task(self._read(reader))

    @property
    def open(self) -> bool:
        return not self.writer.is_closing()

    async def _read(self, reader: asyncio.StreamReader) -> None:
        reason = "the connection closed"
        try:
            while True:
                call, payload = await _read_frame(reader)
                future = self.waiting.get(call)
                if future is not None and not future.done():
                    future.set_result(payload)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, TypeError) as exc:
            if not isinstance(exc, asyncio.IncompleteReadError):
                reason = f"the connection broke: {exc}"
        finally:
            self.writer.close()
            for future in self.waiting.values():
                if not future.done():
                    future.set_exception(Unavailable(self.peer, reason))


class Link:
    """The way to one peer's :class:`LinkServer`: connected on first use and again after a
    failure; a call in flight when the connection breaks fails with :class:`Unavailable`
    (the dispatcher answers its events as retryable, and their resend is deduplicated)."""

    def __init__(self, path: Path, peer: str, *, connect_timeout_s: float = 2.0):
        self.path, self.peer, self.connect_timeout_s = path, peer, connect_timeout_s
        self._ids = itertools.count(1)
        self._connection: _Connection | None = None
        self._connecting = asyncio.Lock()

    async def deliver(self, batch: list[Inbound]) -> list[Outcome]:
        """``batch`` run by the peer's host; its outcomes (an event msgpack cannot carry fails alone)."""
        return await send_batch(self._call, batch)

    async def _call(self, data: bytes) -> bytes:
        connection = await self._connected()
        call = next(self._ids)
        answer = connection.waiting[call] = asyncio.get_running_loop().create_future()
        try:
            connection.writer.write(_frame(call, data))
            return await answer
        finally:
            connection.waiting.pop(call, None)

    async def _connected(self) -> _Connection:
        connection = self._connection
        if connection is not None and connection.open:
            return connection
        async with self._connecting:
            if self._connection is None or not self._connection.open:
                try:
                    reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(self.path)),
                                                            self.connect_timeout_s)
                except (OSError, TimeoutError) as exc:
                    raise Unavailable(self.peer, f"its link cannot be reached: {exc}") from None
                self._connection = _Connection(reader, writer, self.peer)
            return self._connection

    async def aclose(self) -> None:
        if self._connection is not None:
            self._connection.writer.close()
            await asyncio.gather(self._connection.reading, return_exceptions=True)
