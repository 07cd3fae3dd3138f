"""faasd.watchdog.loop: the watchdog's own event loop keeps the asyncio semantics its server relies on.
Real sockets, real pipes, real signals; each check is one the fork and streaming modes depend on."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import pytest

from faasd.watchdog import loop as miniloop


class Recorder:
    """A protocol that records what its transport tells it."""

    def __init__(self) -> None:
        self.events: list[object] = []
        self.transport: miniloop.Transport | None = None

    def connection_made(self, transport: miniloop.Transport) -> None:
        self.transport = transport
        self.events.append("made")

    def data_received(self, data: bytes) -> None:
        self.events.append(data)

    def eof_received(self) -> bool:
        self.events.append("eof")
        return True

    def connection_lost(self, exc: BaseException | None) -> None:
        self.events.append(("lost", exc))

    def pause_writing(self) -> None:
        self.events.append("pause")

    def resume_writing(self) -> None:
        self.events.append("resume")


def _serve(body: object) -> object:
    """Run ``body(loop, port, protocols)`` as a coroutine on a fresh loop serving a :class:`Recorder`."""
    protocols: list[Recorder] = []

    async def main() -> object:
        loop = miniloop.running_loop()

        def factory() -> Recorder:
            protocols.append(Recorder())
            return protocols[-1]

        server = await loop.create_server(factory, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            return await body(loop, port, protocols)  # type: ignore[operator]
        finally:
            server.close()

    return miniloop.run(main())


async def _until(condition: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await miniloop.sleep(0.005)


def test_callbacks_run_in_order_and_timers_by_deadline_and_cancel() -> None:
    seen: list[str] = []

    async def main() -> None:
        loop = miniloop.running_loop()
        loop.call_later(0.03, seen.append, "late")
        cancelled = loop.call_later(0.01, seen.append, "cancelled")
        loop.call_later(0.02, seen.append, "early")
        loop.call_soon(seen.append, "soon1")
        loop.call_soon(seen.append, "soon2")
        cancelled.cancel()
        await miniloop.sleep(0.06)

    miniloop.run(main())
    assert seen == ["soon1", "soon2", "early", "late"]


def test_a_failing_callback_is_logged_and_the_loop_goes_on(capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[str] = []

    async def main() -> None:
        loop = miniloop.running_loop()
        loop.call_soon(lambda: 1 / 0)
        loop.call_soon(seen.append, "after")
        await miniloop.sleep(0.01)

    miniloop.run(main())
    assert seen == ["after"]
    assert "ZeroDivisionError" in capsys.readouterr().err


def test_call_soon_threadsafe_wakes_a_blocked_loop() -> None:
    async def main() -> float:
        loop = miniloop.running_loop()
        done = loop.create_future()
        start = time.monotonic()
        threading.Timer(0.05, loop.call_soon_threadsafe, (done.set_result, time.monotonic)).start()
        clock = await done
        return clock() - start

    assert miniloop.run(main()) < 2.0  # Woken by the self-pipe, not by a timer (there is none).


def test_signal_handler_runs_on_the_loop() -> None:
    async def main() -> int:
        loop = miniloop.running_loop()
        got = loop.create_future()
        loop.add_signal_handler(signal.SIGUSR1, got.set_result, signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGUSR1)
        return await got

    assert miniloop.run(main()) == signal.SIGUSR1
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL  # Put back when the loop closed.


def test_a_reader_removed_earlier_in_a_batch_does_not_run() -> None:
    """Two pipes ready at once: the first callback removes the second's reader; the second must not run."""
    seen: list[str] = []

    async def main() -> None:
        loop = miniloop.running_loop()
        (r1, w1), (r2, w2) = os.pipe(), os.pipe()

        def first() -> None:
            seen.append("first")
            loop.remove_reader(r1)
            loop.remove_reader(r2)

        loop.add_reader(r1, first)
        loop.add_reader(r2, seen.append, "second")
        os.write(w1, b"x")
        os.write(w2, b"x")
        await miniloop.sleep(0.02)
        for fd in (r1, w1, r2, w2):
            os.close(fd)

    miniloop.run(main())
    assert seen == ["first"] or seen == ["second"]  # Whichever epoll reports first; never both.


def test_data_eof_and_the_answer_after_a_half_close() -> None:
    async def body(loop: miniloop.Loop, port: int, protocols: list[Recorder]) -> bytes:
        client = socket.create_connection(("127.0.0.1", port))
        client.sendall(b"hello")
        client.shutdown(socket.SHUT_WR)
        await _until(lambda: protocols and "eof" in protocols[0].events)
        transport = protocols[0].transport
        assert transport is not None
        transport.write(b"answer")  # eof_received said True: the write side is still open.
        transport.close()
        await _until(lambda: ("lost", None) in protocols[0].events)
        client.settimeout(5)
        data = client.recv(100)
        client.close()
        return data

    assert _serve(body) == b"answer"


def test_a_request_already_sent_is_read_in_the_pass_that_accepts_its_connection() -> None:
    """A client on loopback sends its request as soon as its connect completes, usually before the server
    accepts: the transport reads it at once instead of a loop pass later (one epoll wait less per new
    connection: 0.1-0.3 ms on the gateway's edge and on a replica's first call, docs/coldstart.md)."""
    passes = [0]
    seen: list[tuple[object, int]] = []

    class PassRecorder(Recorder):
        def connection_made(self, transport: miniloop.Transport) -> None:
            super().connection_made(transport)
            seen.append(("made", passes[0]))

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            seen.append((data, passes[0]))

    async def main() -> None:
        loop = miniloop.running_loop()
        run_once = loop._run_once

        def counted() -> None:
            passes[0] += 1
            run_once()

        loop._run_once = counted  # type: ignore[method-assign]
        server = await loop.create_server(PassRecorder, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        client.sendall(b"GET / HTTP/1.1\r\n\r\n")
        time.sleep(0.05)  # Sent and queued before the loop gets to accept it.
        await _until(lambda: len(seen) >= 2)
        client.close()
        server.close()

    miniloop.run(main())
    (made, made_pass), (data, data_pass) = seen[:2]
    assert (made, data) == ("made", b"GET / HTTP/1.1\r\n\r\n")
    assert data_pass == made_pass


def test_flow_control_pauses_and_resumes_writing_and_close_flushes_everything() -> None:
    size = 32 * 1024 * 1024  # More than the kernel's buffers take at once.

    async def body(loop: miniloop.Loop, port: int, protocols: list[Recorder]) -> int:
        client = socket.create_connection(("127.0.0.1", port))
        await _until(lambda: bool(protocols))
        protocol = protocols[0]
        transport = protocol.transport
        assert transport is not None
        transport.write(b"x" * size)
        assert "pause" in protocol.events and transport.get_write_buffer_size() > 0
        transport.close()  # After the flush, not before.
        received = 0
        client.setblocking(False)
        while ("lost", None) not in protocol.events or received < size:
            try:
                chunk = client.recv(1 << 20)
            except BlockingIOError:
                await miniloop.sleep(0.001)
                continue
            if not chunk:
                break
            received += len(chunk)
        assert protocol.events.count("resume") == 1
        assert [event for event in protocol.events if isinstance(event, tuple)] == [("lost", None)]
        client.close()
        return received

    assert _serve(body) == size


def test_abort_drops_the_buffer_and_loses_the_connection_once() -> None:
    async def body(loop: miniloop.Loop, port: int, protocols: list[Recorder]) -> list[object]:
        client = socket.create_connection(("127.0.0.1", port))
        await _until(lambda: bool(protocols))
        transport = protocols[0].transport
        assert transport is not None
        transport.write(b"x" * (32 * 1024 * 1024))
        transport.abort()
        transport.abort()
        transport.close()
        await miniloop.sleep(0.02)
        client.close()
        return [event for event in protocols[0].events if isinstance(event, tuple)]

    assert _serve(body) == [("lost", None)]


def test_a_cancelled_task_gets_cancelled_error_at_its_await() -> None:
    async def main() -> list[str]:
        loop = miniloop.running_loop()
        seen: list[str] = []

        async def waiter() -> None:
            try:
                await loop.create_future()
            except miniloop.CancelledError:
                seen.append("cancelled")
                raise

        task = loop.create_task(waiter())
        await miniloop.sleep(0.01)
        task.cancel()
        await miniloop.sleep(0.01)
        seen.append("done" if task.cancelled() else "not cancelled")
        return seen

    assert miniloop.run(main()) == ["cancelled", "done"]
