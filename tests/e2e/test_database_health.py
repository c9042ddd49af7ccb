"""The database broken under a running daemon (replaced, read-only): said at error level,
/healthz 503, the watchdog withheld. The daemon is a real subprocess; the file system is real."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from tests.e2e.harness import DaemonUnderTest, wait_until
from tests.e2e.test_api import TOKEN, api_daemon, free_port
from worker.simulator import Simulator, World, run_simulator

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with run_simulator(World()) as running:
        yield running


async def red_healthz(port: int, daemon: DaemonUnderTest) -> httpx.Response:
    """Wait (probes run every second or so) for /healthz to answer 503; return that reply."""
    async with httpx.AsyncClient(timeout=10) as http:
        replies: list[httpx.Response] = []

        async def red() -> bool:
            reply = await http.get(f"http://127.0.0.1:{port}/healthz")
            replies.append(reply)
            return reply.status_code == 503

        await wait_until(red, 20, "/healthz to answer 503", daemon)
    return replies[-1]


def unhealthy_lines(daemon: DaemonUnderTest) -> list[dict[str, object]]:
    return [line for line in daemon.log_lines()
            if line.get("event") == "store.unhealthy" and line.get("level") == "error"]


async def test_database_replaced_under_the_daemon_is_logged_and_turns_healthz_red(
        sim: Simulator, tmp_path: Path) -> None:
    """The file renamed away and a new one put at its path: an error line naming it, 503."""
    port = free_port()
    daemon = api_daemon(sim, tmp_path, port)
    daemon.start()
    try:
        await daemon.wait_ready()
        async with httpx.AsyncClient(timeout=10) as http:
            assert (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
        daemon.db.rename(tmp_path / "moved-away.db")
        daemon.db.write_bytes(b"")  # a new, empty file at the same path: another inode
        reply = await red_healthz(port, daemon)
        assert reply.json()["checks"]["database"] == "failing"
        assert "replaced" in reply.json()["error"] and str(daemon.db) in reply.json()["error"]
        await wait_until(lambda: unhealthy_lines(daemon), 20, "store.unhealthy", daemon)
        line = unhealthy_lines(daemon)[0]
        assert str(daemon.db) in str(line["problem"]) and "replaced" in str(line["problem"])
    finally:
        await daemon.stop()


@contextlib.contextmanager
def ext4_mount(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A small ext4 file system on a loop device, mounted errors=remount-ro: (folder, device).

    A tmpfs cannot be remounted read-only while the daemon holds its database open for
    writing (the kernel answers EBUSY), which is why this is ext4: ext4's
    ``trigger_fs_error`` makes it go read-only at once, open files or not, as a disk error
    does in production. Skipped when this machine does not allow loop mounts.
    """
    image, folder = tmp_path / "fs.img", tmp_path / "mnt"
    folder.mkdir()
    with image.open("wb") as f:
        f.truncate(32 * 1024 * 1024)
    made = subprocess.run(["mkfs.ext4", "-q", str(image)], capture_output=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"cannot make an ext4 image: {made.stderr.decode(errors='replace')}")
    mounted = subprocess.run(["mount", "-o", "loop,errors=remount-ro", str(image), str(folder)],
                             capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"loop mounts not permitted here: {mounted.stderr.decode(errors='replace')}")
    try:
        source = subprocess.run(["findmnt", "-n", "-o", "SOURCE", str(folder)],
                                capture_output=True, check=True, text=True).stdout.strip()
        device = Path(source).name
        if not Path(f"/sys/fs/ext4/{device}/trigger_fs_error").exists():
            pytest.skip("this kernel has no ext4 trigger_fs_error")
        yield folder, device
    finally:
        for _ in range(50):  # the daemon has exited; its files may take a moment to close
            if subprocess.run(["umount", str(folder)], capture_output=True,
                              check=False).returncode == 0:
                break
            time.sleep(0.1)
        else:
            subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    """A real AF_UNIX datagram socket, as systemd creates for NOTIFY_SOCKET."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.setblocking(False)
    yield sock
    sock.close()


def watchdog_pings(sock: socket.socket) -> int:
    """How many WATCHDOG=1 arrived since the last call."""
    pings = 0
    while True:
        try:
            data = sock.recv(4096)
        except BlockingIOError:
            return pings
        pings += b"WATCHDOG=1" in data.split(b"\n")


def withheld(daemon: DaemonUnderTest) -> bool:
    return any(line.get("event") == "daemon.unhealthy" and line.get("watchdog") == "withheld"
               for line in daemon.log_lines())


async def test_read_only_database_turns_healthz_red_and_withholds_the_watchdog(
        sim: Simulator, tmp_path: Path, notify_socket: socket.socket) -> None:
    """The database's file system goes read-only mid-run: 503 naming it, no more WATCHDOG=1."""
    with ext4_mount(tmp_path) as (folder, device):
        port = free_port()
        daemon = api_daemon(sim, tmp_path, port)
        db = folder / "callwatch.db"
        daemon.config.write_text(daemon.config.read_text().replace(
            'database = "callwatch.db"', f'database = "{db}"'))
        daemon.env = {**daemon.env, "NOTIFY_SOCKET": str(tmp_path / "notify.sock"),
                      "WATCHDOG_USEC": "2000000"}
        daemon.start()
        try:
            await daemon.wait_ready()
            async with httpx.AsyncClient(timeout=10) as http:
                reply = await http.get(f"http://127.0.0.1:{port}/healthz")
                assert reply.status_code == 200, reply.text
                await wait_until(lambda: watchdog_pings(notify_socket), 10, "WATCHDOG=1",
                                 daemon)
                Path(f"/sys/fs/ext4/{device}/trigger_fs_error").write_text("callwatch test\n")
                with pytest.raises(OSError, match="Read-only"):
                    (folder / "probe").write_text("x")
                reply = await red_healthz(port, daemon)
                assert reply.json()["checks"]["database"] == "failing"
                assert str(db) in reply.json()["error"], reply.text
                # The watchdog loop probes every 5 s (supervise.PROBE_EVERY): it says when it
                # stops vouching, and from then on no ping arrives.
                await wait_until(lambda: withheld(daemon), 20, "daemon.unhealthy", daemon)
                watchdog_pings(notify_socket)  # drain what was sent before it turned red
                await anyio.sleep(3.0)  # three ping intervals (WATCHDOG_USEC / 2)
                assert watchdog_pings(notify_socket) == 0
                metrics = await http.get(f"http://127.0.0.1:{port}/metrics",
                                         headers={"Authorization": f"Bearer {TOKEN}"})
                assert metrics.status_code == 200  # the API itself keeps answering
        finally:
            await daemon.stop()
