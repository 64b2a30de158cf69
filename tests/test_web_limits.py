"""What a client can make the HTTP server hold, against a real exporter process.

Issue 18's abuse probe: a header bomb grew the process by 700 MB before
authentication; idle and half-sent connections cost a thread each and were
never closed; the listen backlog was 5; 200 concurrent scrapers saw timeouts.
Every figure here has a wide margin: these tests catch unbounded growth, not
slowness.
"""

from __future__ import annotations

import asyncio
import os
import re
import selectors
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from exporter.config.server import ServerConfig
from exporter.simulator import Simulator
from exporter.web import ServerLimits
from exporter.web.server import limits_of
from tests.conftest import ExporterProcess, free_port, k6_config, proc_status, samples_of, write_config
from tests.test_cli import cli

GET = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n"


@pytest.fixture
def start_exporter(simulator: Simulator, tmp_path: Path) -> Iterator:  # type: ignore[type-arg]
    processes: list[ExporterProcess] = []

    def start(server_extra: str = "") -> ExporterProcess:
        port = free_port()
        config = tmp_path / f"exporter-{port}.toml"
        config.write_text(f'[server]\nlisten = "127.0.0.1:{port}"\n{server_extra}\n' + k6_config(simulator, [103054]))
        process = ExporterProcess(config, port)
        processes.append(process)
        process.wait_ready()
        return process

    yield start
    for process in processes:
        if process.proc.poll() is None:
            os.kill(process.proc.pid, signal.SIGCONT)
        process.stop()


def threads_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def rejected(url: str) -> dict[str, float]:
    found = samples_of(httpx.get(f"{url}/metrics", timeout=10).text, "apimetrics_http_connections_rejected_total")
    return {dict(labels)["reason"]: value for labels, value in found.items()}


def status_of(answer: bytes) -> int | None:
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", answer)
    return int(match.group(1)) if match else None


def read_until_closed(sock: socket.socket, timeout: float) -> bytes:
    """Everything the server sends until it closes; a reset counts as closed."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, BrokenPipeError):
        pass
    return data


def test_header_bomb_is_refused_and_memory_stays_bounded(start_exporter) -> None:  # type: ignore[no-untyped-def]
    exporter = start_exporter()
    pid = exporter.proc.pid
    before = proc_status(pid, "VmRSS")
    header = b"X-Bomb-%02d: " + b"a" * 65_000 + b"\r\n"
    answers: list[bytes] = []

    def bomb() -> None:
        with socket.create_connection(("127.0.0.1", exporter.port), timeout=30) as sock:
            try:
                sock.sendall(GET)  # with its Host header, 99 headers of 65,000 bytes
                for index in range(98):
                    sock.sendall(header % index)
                sock.sendall(b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused while still sending: what we want
            answers.append(read_until_closed(sock, 30))

    threads = [threading.Thread(target=bomb) for _ in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # 30 x 6.4 MB of headers took today's server from 347 MB to 1,083 MB. The
    # high-water mark covers the whole attack; 64 MiB is several times what a
    # bounded server needs (30 heads of 64 KiB plus read buffers).
    peak = proc_status(pid, "VmHWM")
    assert peak - before < 64 * 1024 * 1024, f"RSS {before / 2**20:.0f} MiB -> peak {peak / 2**20:.0f} MiB"
    assert len(answers) == 30
    assert all(answer == b"" or status_of(answer) == 431 for answer in answers), answers
    assert httpx.get(f"{exporter.url}/metrics", timeout=10).status_code == 200
    assert rejected(exporter.url)["headers_too_large"] == 30


def test_idle_and_half_sent_connections_are_closed_without_a_thread_each(start_exporter) -> None:  # type: ignore[no-untyped-def]
    exporter = start_exporter('read_timeout = "2s"')
    threads_before = threads_of(exporter.proc.pid)
    idle = [socket.create_connection(("127.0.0.1", exporter.port), timeout=10) for _ in range(300)]
    half = [socket.create_connection(("127.0.0.1", exporter.port), timeout=10) for _ in range(300)]
    try:
        for sock in half:
            sock.sendall(GET + b"X-Slow: ")  # a request head that never ends
        # A scraper still gets its answer while 600 connections hang.
        assert httpx.get(f"{exporter.url}/metrics", timeout=10).status_code == 200
        assert threads_of(exporter.proc.pid) < threads_before + 20  # was one thread per connection

        # Each is closed by the read deadline (2 s here; allow far more).
        selector = selectors.DefaultSelector()
        for sock in idle + half:
            selector.register(sock, selectors.EVENT_READ)
        open_ = set(idle + half)
        deadline = time.monotonic() + 60
        while open_ and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=1):
                sock = key.fileobj  # type: ignore[assignment]
                if read_until_closed(sock, 1) == b"":  # type: ignore[arg-type]
                    selector.unregister(sock)
                    open_.discard(sock)  # type: ignore[arg-type]
        assert not open_, f"{len(open_)} of 600 connections still open after 60 s"
    finally:
        for sock in idle + half:
            sock.close()
    assert rejected(exporter.url)["read_timeout"] >= 600


def test_two_hundred_concurrent_scrapers_all_get_answers(start_exporter) -> None:  # type: ignore[no-untyped-def]
    exporter = start_exporter()
    failures: list[str] = []

    async def scrape() -> None:
        # Prometheus' default scrape_timeout; a scrape takes milliseconds.
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", exporter.port), 10)
        writer.write(GET + b"Connection: close\r\n\r\n")
        body = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        if status_of(body) != 200:
            failures.append(body[:80].decode(errors="replace"))

    async def scraper() -> None:
        for _ in range(10):
            try:
                await scrape()
            except (TimeoutError, OSError) as exc:
                failures.append(repr(exc))

    async def main() -> None:
        await asyncio.gather(*(scraper() for _ in range(200)))

    asyncio.run(main())
    assert failures == []


def test_connection_cap_logs_once_and_counts(start_exporter) -> None:  # type: ignore[no-untyped-def]
    exporter = start_exporter('max_connections = 20\nread_timeout = "60s"')
    idle = [socket.create_connection(("127.0.0.1", exporter.port), timeout=10) for _ in range(19)]
    client = httpx.Client(timeout=10)  # keeps its connection: the 20th
    try:
        body = client.get(f"{exporter.url}/metrics").text
        assert samples_of(body, "apimetrics_http_open_connections") == {(): 20.0}  # all accepted: at the cap
        for _ in range(5):
            with socket.create_connection(("127.0.0.1", exporter.port), timeout=10) as extra:
                answer = read_until_closed(extra, 10)
                assert answer == b"" or status_of(answer) == 503, answer
    finally:
        client.close()
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + 30
    while True:  # the server frees the slots as it sees the closes
        try:
            counts = rejected(exporter.url)
            break
        except httpx.HTTPError:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    assert counts["max_connections"] >= 5
    output = exporter.stop()
    lines = [line for line in output.splitlines() if "server.max_connections" in line]
    assert len(lines) == 1, output


def test_listen_backlog_holds_a_burst_while_the_process_is_busy(start_exporter) -> None:  # type: ignore[no-untyped-def]
    # With the process stopped nothing is accepted: the kernel holds
    # completed connections in the listen backlog (it was 5: the 7th connect hung).
    exporter = start_exporter()
    os.kill(exporter.proc.pid, signal.SIGSTOP)
    burst: list[socket.socket] = []
    try:
        for _ in range(150):
            burst.append(socket.create_connection(("127.0.0.1", exporter.port), timeout=5))
    finally:
        os.kill(exporter.proc.pid, signal.SIGCONT)
        for sock in burst:
            sock.close()
    assert len(burst) == 150
    assert httpx.get(f"{exporter.url}/metrics", timeout=10).status_code == 200


def test_limits_are_server_keys_and_bad_values_exit_2_naming_them(tmp_path: Path) -> None:
    assert limits_of(ServerConfig()) == ServerLimits()  # one set of defaults
    config = write_config(tmp_path, """
        [server]
        max_connections = 0
        read_timeout = "soon"
        idle_timeout = -1
        write_timeout = "0s"
        max_header_bytes = 10
        max_headers = 0
    """)
    result = cli("run", "--config", str(config))
    assert result.returncode == 2
    for key in ("max_connections", "read_timeout", "idle_timeout", "write_timeout", "max_header_bytes", "max_headers"):
        assert f"server.{key}: " in result.stderr, result.stderr
