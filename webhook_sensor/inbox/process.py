"""The receiver's inbox writer: group commits in a child process with its own GIL.

`await writer.submit(record)` resolves only after the COMMIT (synchronous=FULL for SQLite), so a
2xx sent after it can never lose the message, and raises InboxUnavailable (a 503) when the
message could not be stored. The event loop only pickles each loop iteration's records (plain
tuples) down a pipe and reads the answers back as loop I/O; the child runs `Committer`
and coalesces whatever has arrived into one transaction. Until session 5 the commits ran in a
writer thread of the receiver, which shares its GIL: each SQLite (or psycopg) call re-took the
lock the event loop needs. Side by side on one server, beside a bare endpoint at 33-34k req/s,
that thread stored 15.5k deliveries/s and this child 17.3-17.9k/s (`bench/receiver.py`). Keeping
the thread and moving only the SQLite calls into a child gained nothing: the extra wake-ups add
latency, which a closed-loop sender feels as throughput.

One child per event loop (the receiver has one). A child that dies fails its pending batch with
InboxUnavailable (a 503: QStash redelivers, and de-duplication keeps the message once); the next
delivery starts a new one. The child reads until its pipe closes, so it never outlives the
receiver, not even a SIGKILLed one. The target travels on the pipe, not the command line, so a
PostgreSQL password never shows in `ps`.

Frames both ways: a 4-byte big-endian length, then a pickle. To the child: the target, then
lists of record tuples. From the child: per list, one (result, error kind, error text) per
record, in order.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import pickle
import select
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from webhook_sensor.inbox.base import BatchSink, open_inbox
from webhook_sensor.inbox.records import (
    InboxDataError,
    InboxRecord,
    InboxTarget,
    InboxUnavailable,
    is_postgres_url,
)


class Committer:
    """Commits batches to one inbox target (in the child of `inbox_process.ProcessCommitWriter`).

    The store is opened on first use and reopened after a failure, so a transient problem heals
    without a restart. A batch whose values the store refuses is retried record by record, so
    only the record it cannot hold fails.
    """

    def __init__(self, target: InboxTarget) -> None:
        self.target: InboxTarget = target if is_postgres_url(target) else Path(target)
        self._sink: BatchSink | None = None

    def _open(self) -> BatchSink:
        if self._sink is None:
            # Creates the file/table if needed, or raises InboxUnavailable.
            self._sink = open_inbox(self.target).open_writer()
        return self._sink

    def _drop_sink(self) -> None:
        if self._sink is not None:
            # A broken connection may fail to close; it is dropped either way.
            with contextlib.suppress(Exception):
                self._sink.close()
            self._sink = None

    def close(self) -> None:
        self._drop_sink()

    def _write(self, records: list[InboxRecord]) -> tuple[list, list]:
        """(results, errors) per record; a failed write commits nothing of what it was given."""
        try:
            return self._open().write(records), [None] * len(records)
        except Exception as exc:
            if not isinstance(exc, InboxDataError):  # after a refused value it rolled back: keep it
                self._drop_sink()
            error = exc if isinstance(exc, InboxUnavailable) else InboxUnavailable(str(exc))
            return [None] * len(records), [error] * len(records)

    def commit(self, records: list[InboxRecord]) -> list[tuple[bool | None, Exception | None]]:
        """(stored new?, error) per record, in order."""
        results, errors = self._write(records)
        if len(records) > 1 and isinstance(errors[0], InboxDataError):
            # Some record's values were refused: commit them one by one, so only that one fails.
            # Stop at the first failure that is not about data (the store itself is in trouble).
            results, errors = [], []
            for i, rec in enumerate(records):
                result, error = self._write([rec])
                if error[0] is not None and not isinstance(error[0], InboxDataError):
                    results += [None] * (len(records) - i)
                    errors += [error[0]] * (len(records) - i)
                    break
                results += result
                errors += error
        return list(zip(results, errors, strict=True))


_HEADER = 4
_OK, _UNAVAILABLE, _DATA = 0, 1, 2


def _frame(obj: object) -> bytes:
    payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return len(payload).to_bytes(_HEADER, "big") + payload


def _take_frames(buf: bytearray) -> list:
    """Remove and decode every complete frame at the start of `buf`."""
    frames = []
    while len(buf) >= _HEADER:
        size = int.from_bytes(buf[:_HEADER], "big")
        if len(buf) < _HEADER + size:
            break
        frames.append(pickle.loads(buf[_HEADER : _HEADER + size]))
        del buf[: _HEADER + size]
    return frames


def _fail_all(futures: Iterable[asyncio.Future], error: Exception) -> None:
    for fut in futures:
        if not fut.done():  # its request may have gone away (client disconnect, cancelled)
            fut.set_exception(error)


def _as_tuple(rec: InboxRecord) -> tuple:
    return (rec.message_id, rec.body, rec.slug, rec.concept_name, rec.seed_urls, rec.symbol,
            rec.retried, rec.schedule_id, rec.caller_ip, rec.headers)  # fmt: skip


class _Replies(asyncio.Protocol):
    """Reads the child's answers and settles the oldest batch's futures with each."""

    def __init__(self, channel: _Channel) -> None:
        self.channel = channel
        self.buf = bytearray()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        for reply in _take_frames(self.buf):
            self.channel.settle(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.channel.fail("the inbox writer process stopped")


class _Channel:
    """One child process and its pipes, bound to one event loop."""

    def __init__(self, target: InboxTarget, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.broken = False
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "webhook_sensor.inbox.process"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdin is not None
        self.proc.stdin.write(_frame(str(target)))
        self.proc.stdin.flush()
        self.out: asyncio.WriteTransport | None = None
        self.ready = loop.create_task(self._connect())
        self.waiting: list[tuple[InboxRecord, asyncio.Future]] = []
        self.inflight: collections.deque[list[asyncio.Future]] = collections.deque()

    async def _connect(self) -> None:
        self.out, _ = await self.loop.connect_write_pipe(asyncio.Protocol, self.proc.stdin)
        await self.loop.connect_read_pipe(lambda: _Replies(self), self.proc.stdout)

    async def submit(self, record: InboxRecord) -> bool:
        try:
            if not self.ready.done():
                await asyncio.shield(self.ready)
            self.ready.result()
        except Exception as exc:  # the pipes could not join this loop
            self.broken = True
            raise InboxUnavailable(f"cannot reach the inbox writer process: {exc}") from None
        fut = self.loop.create_future()
        if not self.waiting:
            self.loop.call_soon(self._hand_over)
        self.waiting.append((record, fut))
        return await fut

    def _hand_over(self) -> None:
        items, self.waiting = self.waiting, []
        if not items:
            return
        if self.broken or self.out is None or self.out.is_closing():
            _fail_all(
                (fut for _, fut in items), InboxUnavailable("the inbox writer process stopped")
            )
            return
        self.inflight.append([fut for _, fut in items])
        self.out.write(_frame([_as_tuple(rec) for rec, _ in items]))

    def settle(self, reply: list) -> None:
        futs = self.inflight.popleft()
        for fut, (result, kind, text) in zip(futs, reply, strict=True):
            if fut.done():  # its request went away (client disconnect, cancelled task)
                continue
            if kind == _OK:
                fut.set_result(result)
            else:
                fut.set_exception((InboxDataError if kind == _DATA else InboxUnavailable)(text))

    def fail(self, why: str) -> None:
        self.broken = True
        error = InboxUnavailable(why)
        while self.inflight:
            _fail_all(self.inflight.popleft(), error)

    def _end_input(self) -> None:
        self.broken = True
        _fail_all((fut for _, fut in self.waiting), InboxUnavailable("inbox closed"))
        self.waiting = []
        if self.out is not None and not self.loop.is_closed():
            self.out.close()  # flushes what was written, then closes: the loop must keep running
        else:  # its loop is gone: close the pipe's file directly
            with contextlib.suppress(OSError):
                if self.proc.stdin is not None:
                    self.proc.stdin.close()

    async def aclose(self, timeout: float) -> None:
        """From this channel's own loop: let the child finish what it was given, then exit."""
        self._end_input()
        deadline = self.loop.time() + timeout
        while self.proc.poll() is None and self.loop.time() < deadline:
            await asyncio.sleep(0.01)
        self._reap()

    def close(self, timeout: float) -> None:
        """From outside its loop (closed, or another thread's)."""
        self._end_input()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout)
        self._reap()

    def _reap(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


class ProcessCommitWriter:
    """`await writer.submit(record)` -> True if stored new, False for a repeat; resolves only
    after the COMMIT, and raises InboxUnavailable when the message could not be stored."""

    def __init__(self, target: InboxTarget) -> None:
        self.target = target  # the child's Committer reads it as a path or a postgresql:// URL
        self._channels: dict[asyncio.AbstractEventLoop, _Channel] = {}
        self._closed = False

    async def submit(
        self, record: InboxRecord, loop: asyncio.AbstractEventLoop | None = None
    ) -> bool:
        loop = loop or asyncio.get_running_loop()
        if self._closed:
            raise InboxUnavailable("inbox closed")
        channel = self._channels.get(loop)
        if channel is None or channel.broken:
            self._sweep()
            try:
                channel = self._channels[loop] = _Channel(self.target, loop)
            except OSError as exc:
                raise InboxUnavailable(f"cannot start the inbox writer process: {exc}") from None
        return await channel.submit(record)

    def _sweep(self) -> None:
        """Stop the children of loops that have closed, and of channels that broke."""
        for loop, channel in list(self._channels.items()):
            if loop.is_closed() or channel.broken:
                del self._channels[loop]
                channel.close(timeout=0 if channel.broken else 10)

    async def aclose(self) -> None:
        """Close from the receiver's loop (its lifespan): each child commits what it was given."""
        self._closed = True
        channels, self._channels = self._channels, {}
        here = asyncio.get_running_loop()
        for loop, channel in channels.items():
            if loop is here:
                await channel.aclose(timeout=10)
            else:
                channel.close(timeout=10)

    def close(self) -> None:
        """Close from outside any of its loops (tests, scripts after `asyncio.run`)."""
        self._closed = True
        channels, self._channels = self._channels, {}
        for channel in channels.values():
            channel.close(timeout=10)


# --- the child ---------------------------------------------------------------------------------


def _read_frames(fd: int, buf: bytearray) -> list | None:
    """Every frame that has arrived on fd, waiting for at least one; None at end of input."""
    frames: list = []
    while True:
        frames += _take_frames(buf)
        if frames and not select.select([fd], [], [], 0)[0]:
            return frames
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return frames or None
        buf += chunk


def serve(max_batch: int = 512) -> None:
    """The child: read the target, then commit what arrives and answer, until stdin closes."""
    buf = bytearray()
    first = _read_frames(0, buf)
    if not first:
        return
    target, requests = first[0], first[1:]
    committer = Committer(target)
    out = sys.stdout.buffer
    try:
        while True:
            if not requests:
                requests = _read_frames(0, buf)
                if requests is None:
                    break
            records = [InboxRecord(*row) for rows in requests for row in rows]
            reply = []
            for start in range(0, len(records), max_batch):
                for result, error in committer.commit(records[start : start + max_batch]):
                    if error is None:
                        reply.append((result, _OK, ""))
                    else:
                        kind = _DATA if isinstance(error, InboxDataError) else _UNAVAILABLE
                        reply.append((None, kind, str(error)))
            pos = 0
            for rows in requests:  # one answer per request, in order
                out.write(_frame(reply[pos : pos + len(rows)]))
                pos += len(rows)
            out.flush()
            requests = []
    finally:
        committer.close()


if __name__ == "__main__":
    serve()
