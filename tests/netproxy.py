"""A loopback TCP proxy that injects network faults, for the network-fault tests.

`FaultProxy(target_host, target_port)` listens on a free 127.0.0.1 port and forwards every
connection to the target, on an asyncio loop in a background thread. Its mode says what
the network does:

- `pass`: forward both ways.
- `blackhole`: a partition. Nothing is forwarded either way and new connections are
  accepted but never reach the target; what was sent waits (as TCP retransmits would) and
  flows once the mode is back to `pass`.
- `reset`: every open connection is reset (RST), and so is every new one.
- `delay`: forward, each chunk `delay` seconds late.

`reset_connections()` resets the open connections once and keeps the mode. `bytes_up` and
`bytes_down` count what was forwarded to and from the target.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Iterator
from typing import Literal

from nomad_actions.testing import free_port

Mode = Literal["pass", "blackhole", "reset", "delay"]
_CHUNK = 65536
_POLL = 0.02


class FaultProxy:
    """See the module docstring. Use as a context manager, or `start()` / `stop()`."""

    def __init__(self, target_host: str, target_port: int, port: int | None = None) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.mode: Mode = "pass"
        self.delay = 0.0
        self.resets = 0
        self.accepted = 0
        self.bytes_up = 0
        self.bytes_down = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter | None]] = set()

    @property
    def address(self) -> str:
        """`host:port` to connect to instead of the target."""
        return f"{self.host}:{self.port}"

    # -- control (any thread) -------------------------------------------------------------

    def set_mode(self, mode: Mode, delay: float = 0.0) -> None:
        """Switch the mode; `reset` also resets what is open now."""
        self.delay = delay
        self.mode = mode
        if mode == "reset":
            self.reset_connections()

    @contextlib.contextmanager
    def fault(self, mode: Mode, delay: float = 0.0) -> Iterator[FaultProxy]:
        """`mode` for the duration of the `with` block, then `pass` again."""
        self.set_mode(mode, delay)
        try:
            yield self
        finally:
            self.set_mode("pass")

    def reset_connections(self) -> int:
        """Reset every open connection (both sides get an RST); returns how many."""
        if self._loop is None:
            return 0
        done = asyncio.run_coroutine_threadsafe(self._reset_all(), self._loop)
        return done.result(timeout=10)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        ready = threading.Event()
        errors: list[BaseException] = []

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._handle, self.host, self.port)
                )
            except BaseException as err:
                errors.append(err)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._reset_all())
            loop.close()

        self._thread = threading.Thread(target=main, name=f"fault-proxy-{self.port}", daemon=True)
        self._thread.start()
        ready.wait(10)
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        loop, self._loop = self._loop, None
        if loop is None:
            return

        async def close() -> None:
            if self._server is not None:
                self._server.close()
            loop.stop()

        asyncio.run_coroutine_threadsafe(close(), loop)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the loop's side ------------------------------------------------------------------

    @staticmethod
    def _rst(writer: asyncio.StreamWriter | None) -> None:
        if writer is None:
            return
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                # Linger 0: close() sends RST instead of FIN.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    async def _reset_all(self) -> int:
        pairs = list(self._pairs)
        self._pairs.clear()
        for client, upstream in pairs:
            self._rst(client)
            self._rst(upstream)
        self.resets += len(pairs)
        return len(pairs)

    async def _wait_while_blackholed(self) -> None:
        while self.mode == "blackhole":
            await asyncio.sleep(_POLL)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.mode == "reset":
            self.resets += 1
            self._rst(writer)
            return
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter | None] = (writer, None)
        self._pairs.add(pair)
        await self._wait_while_blackholed()
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            self._pairs.discard(pair)
            self._rst(writer)
            return
        if pair not in self._pairs:  # reset meanwhile
            self._rst(up_writer)
            return
        self._pairs.discard(pair)
        pair = (writer, up_writer)
        self._pairs.add(pair)
        await asyncio.gather(
            self._pump(reader, up_writer, pair, up=True),
            self._pump(up_reader, writer, pair, up=False),
        )
        self._pairs.discard(pair)
        for end in (writer, up_writer):
            with contextlib.suppress(OSError, RuntimeError):
                end.close()

    async def _pump(
        self,
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter,
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter | None],
        *,
        up: bool,
    ) -> None:
        try:
            while True:
                # A partition: stop reading, so the sender's data waits in the buffers.
                await self._wait_while_blackholed()
                data = await src.read(_CHUNK)
                if not data:
                    break
                await self._wait_while_blackholed()
                if self.mode == "delay" and self.delay > 0:
                    await asyncio.sleep(self.delay)
                if pair not in self._pairs:
                    return
                dst.write(data)
                if up:
                    self.bytes_up += len(data)
                else:
                    self.bytes_down += len(data)
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            if pair in self._pairs:
                with contextlib.suppress(OSError, RuntimeError):
                    if dst.can_write_eof():
                        dst.write_eof()
