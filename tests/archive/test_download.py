"""One download against the simulator's file store over real HTTP (and a few wire oddities
the simulator does not do, through httpx.MockTransport)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import structlog
from structlog.testing import capture_logs

from tests.archive.rig import count_gets
from worker.archive.disk import Disk
from worker.archive.download import (
    GoneError,
    LinkRejectedError,
    NotARecordingError,
    TooLargeError,
    Transfer,
    TransientError,
    fetch,
)
from worker.archive.folder import FolderUpload
from worker.archive.target import Upload
from worker.config_sections import ArchiveConfig
from worker.model import DownloadSource
from worker.simulator import Fault, RecordingScript, Simulator, World, run_simulator
from worker.simulator.content import content_bytes, expected_sha256
from worker.urls import safe_url

pytestmark = pytest.mark.anyio

SIZE = 300_000
CONFIG = ArchiveConfig(timeout=2.0, max_redirects=3, max_size=10**9)
LOG = structlog.get_logger("test")


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with run_simulator(World()) as running:
        yield running


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(verify=False) as http:  # noqa: S501 - loopback only
        yield http


def recording(sim: Simulator, size: int = SIZE, provider: str = "apifycloud"
              ) -> tuple[RecordingScript, Callable[[], DownloadSource]]:
    """A recording in the world, and a function handing out fresh signed links to it."""
    script = sim.world.add_call(provider, starts_after=0, lasts=0,
                                recordings=[RecordingScript(ready_after=0, size=size)])
    rec = script.recordings[0]

    def link() -> DownloadSource:
        signed = sim.signer.sign(provider, script.call_id, rec, time.time())
        return DownloadSource(url=signed.url, expires_at=signed.expires_at)

    return rec, link


def transfer(disk: Disk, expected: int | None = None) -> Transfer:
    return Transfer(partial=FolderUpload(disk.create_partial("rec")), expected_size=expected)


def digest(partial: Upload) -> str:
    return partial.sha256


async def test_the_whole_file_arrives_with_its_digest(sim: Simulator, client: httpx.AsyncClient,
                                                      disk: Disk) -> None:
    """A plain download streams every byte to the scratch file and hashes them on the way."""
    rec, link = recording(sim)
    job = transfer(disk, expected=SIZE)
    await fetch(client, link(), job, CONFIG, LOG)
    assert job.partial.size == SIZE
    assert digest(job.partial) == expected_sha256(rec)
    assert job.content_type == "video/mp4"


async def test_a_cut_body_is_resumed_with_range(sim: Simulator, client: httpx.AsyncClient,
                                                disk: Disk) -> None:
    """A connection cut mid-body continues with Range from the bytes already on disk."""
    rec, link = recording(sim)
    sim.faults["files"].add(Fault.TRUNCATE_BODY, after=100_000, count=1)
    gets = count_gets(sim)
    job = transfer(disk)
    with capture_logs() as logs:
        await fetch(client, link(), job, CONFIG, LOG)
    assert digest(job.partial) == expected_sha256(rec)
    assert sum(gets.values()) == 2
    resumed = [e for e in logs if e["event"] == "recording.download_resumed"]
    assert [e["offset"] for e in resumed] == [100_000]
    assert not any(e["event"] == "recording.download_restarted" for e in logs)


async def test_a_body_that_is_always_cut_never_completes(sim: Simulator,
                                                         client: httpx.AsyncClient,
                                                         disk: Disk) -> None:
    """Cut after cut, the download gives up with the bytes short, never claiming completion."""
    _, link = recording(sim)
    sim.faults["files"].add(Fault.TRUNCATE_BODY, after=20_000)
    job = transfer(disk)
    with pytest.raises(TransientError, match="connection cut"):
        await fetch(client, link(), job, CONFIG, LOG)
    assert job.partial.size < SIZE


async def test_an_xml_error_body_with_status_200_is_rejected(sim: Simulator,
                                                             client: httpx.AsyncClient,
                                                             disk: Disk) -> None:
    """A 200 carrying an S3-style XML error is not a recording; not a byte of it is kept."""
    _, link = recording(sim)
    sim.faults["files"].add(Fault.XML_ERROR_200, count=1)
    job = transfer(disk)
    with pytest.raises(NotARecordingError, match="application/xml"):
        await fetch(client, link(), job, CONFIG, LOG)
    assert job.partial.size == 0


@pytest.mark.parametrize("ctype", ["text/html; charset=utf-8", "application/json",
                                   "text/plain", "application/problem+json"])
async def test_a_document_content_type_is_rejected(sim: Simulator, client: httpx.AsyncClient,
                                                   disk: Disk, ctype: str) -> None:
    """The bytes labelled as a document are refused: an error page is not a recording."""
    _, link = recording(sim)
    sim.faults["files"].add(Fault.WRONG_CONTENT_TYPE, content_type=ctype, count=1)
    with pytest.raises(NotARecordingError, match="not a recording"):
        await fetch(client, link(), transfer(disk), CONFIG, LOG)


async def test_a_link_that_dies_mid_download_resumes_on_a_fresh_one(
        sim: Simulator, client: httpx.AsyncClient, disk: Disk) -> None:
    """Expired mid-body: the resume gets 403, and a fresh link continues from the same byte."""
    rec, link = recording(sim)
    sim.faults["files"].add(Fault.EXPIRE_MID_DOWNLOAD, after=120_000, stall=0.1, count=1)
    job = transfer(disk)
    with pytest.raises(LinkRejectedError, match="403"):
        await fetch(client, link(), job, CONFIG, LOG)
    assert job.partial.size == 120_000
    with capture_logs() as logs:
        await fetch(client, link(), job, CONFIG, LOG)
    assert digest(job.partial) == expected_sha256(rec)
    assert not any(e["event"] == "recording.download_restarted" for e in logs)


async def test_a_stall_past_the_timeout_counts_as_a_cut(sim: Simulator,
                                                        client: httpx.AsyncClient,
                                                        disk: Disk) -> None:
    """No byte for `timeout` seconds: the read gives up and the bytes so far are kept."""
    _, link = recording(sim)
    sim.faults["files"].add(Fault.EXPIRE_MID_DOWNLOAD, after=50_000, stall=30, count=1)
    job = transfer(disk)
    started = time.monotonic()
    with pytest.raises(LinkRejectedError):
        await fetch(client, link(), job, ArchiveConfig(timeout=0.3), LOG)
    assert time.monotonic() - started < 5
    assert job.partial.size == 50_000


async def test_a_recording_over_max_size_is_refused_before_any_byte(
        sim: Simulator, client: httpx.AsyncClient, disk: Disk) -> None:
    """A Content-Length over max_size is refused from the headers: nothing is written."""
    _, link = recording(sim, size=5000)
    job = transfer(disk)
    with pytest.raises(TooLargeError, match="over max_size"):
        await fetch(client, link(), job, ArchiveConfig(max_size=4999), LOG)
    assert job.partial.size == 0


async def test_a_size_other_than_the_providers_is_rejected(sim: Simulator,
                                                           client: httpx.AsyncClient,
                                                           disk: Disk) -> None:
    """When the provider gave a size, storage announcing another one is not our recording."""
    _, link = recording(sim, size=5000)
    with pytest.raises(NotARecordingError, match="the provider said 6000"):
        await fetch(client, link(), transfer(disk, expected=6000), CONFIG, LOG)


async def test_storage_statuses_map_to_what_they_mean(sim: Simulator, client: httpx.AsyncClient,
                                                      disk: Disk) -> None:
    """403 -> link rejected, 404 -> gone, 503 -> transient with the server's Retry-After."""
    rec, link = recording(sim)
    expired = sim.signer.sign("apifycloud", "no-such-call", rec, time.time() - 10_000)
    with pytest.raises(LinkRejectedError):
        await fetch(client, DownloadSource(url=expired.url), transfer(disk), CONFIG, LOG)
    missing = sim.signer.sign("apifycloud", "no-such-call", rec, time.time())
    with pytest.raises(GoneError, match="404"):
        await fetch(client, DownloadSource(url=missing.url), transfer(disk), CONFIG, LOG)
    sim.faults["files"].add(Fault.SERVER_ERROR, status=503, retry_after=7, count=1)
    with pytest.raises(TransientError) as caught:
        await fetch(client, link(), transfer(disk), CONFIG, LOG)
    assert caught.value.retry_after == 7


async def test_credentials_never_leave_their_origin(sim: Simulator, client: httpx.AsyncClient,
                                                    disk: Disk) -> None:
    """Redirects keep the key on its own origin and drop it for good at the first other one."""
    rec, link = recording(sim)
    origin = sim.sink_url.rsplit("/", 1)[0]
    elsewhere = origin.replace("127.0.0.1", "localhost")  # same server, another origin
    sim.sink.behave("/hooks/a", status=302, location="/hooks/b")
    sim.sink.behave("/hooks/b", status=307, location=f"{elsewhere}/hooks/c")
    sim.sink.behave("/hooks/c", status=302, location=link().url)
    source = DownloadSource(url=f"{origin}/hooks/a", headers={"X-API-Key": "sk-secret"})
    job = transfer(disk)
    await fetch(client, source, job, CONFIG, LOG)
    assert digest(job.partial) == expected_sha256(rec)
    keys = {r.path: r.header("x-api-key") for r in sim.sink.requests}
    assert keys == {"/hooks/a": "sk-secret", "/hooks/b": "sk-secret", "/hooks/c": None}


async def test_redirects_are_limited(sim: Simulator, client: httpx.AsyncClient,
                                     disk: Disk) -> None:
    """More than max_redirects hops is refused."""
    _, link = recording(sim)
    sim.sink.behave("/hooks/a", status=302, location="/hooks/b")
    sim.sink.behave("/hooks/b", status=302, location=link().url)
    source = DownloadSource(url=sim.sink_url.rsplit("/", 1)[0] + "/hooks/a")
    with pytest.raises(NotARecordingError, match="more than 1 redirects"):
        await fetch(client, source, transfer(disk), ArchiveConfig(max_redirects=1), LOG)


@pytest.mark.parametrize("target", ["file:///etc/passwd", "ftp://127.0.0.1/x",
                                    "gopher://127.0.0.1:70/x"])
async def test_only_http_urls_are_fetched(sim: Simulator, client: httpx.AsyncClient, disk: Disk,
                                          target: str) -> None:
    """Neither a link nor a redirect may lead anywhere but http(s)."""
    with pytest.raises(NotARecordingError, match="non-http"):
        await fetch(client, DownloadSource(url=target), transfer(disk), CONFIG, LOG)
    sim.sink.behave("/hooks/r", status=302, location=target)
    source = DownloadSource(url=sim.sink_url.rsplit("/", 1)[0] + "/hooks/r")
    with pytest.raises(NotARecordingError, match="non-http"):
        await fetch(client, source, transfer(disk), CONFIG, LOG)


def test_logged_urls_keep_host_and_path_only() -> None:
    """The query of a signed URL (its credential) never reaches a log line."""
    url = "https://storage.example.com/bucket/a.wav?X-Goog-Signature=abc&X-Goog-Expires=300"
    assert safe_url(url) == "https://storage.example.com/bucket/a.wav"
    assert safe_url("http://user:pw@host/p?q=1") == "http://host/p"


# ------------------------------------------------------------------ what the simulator won't do

BODY = content_bytes(RecordingScript(id="mock", size=200_000, content_type="audio/wav"))


class _CutStream(httpx.AsyncByteStream):
    """A body that breaks off after ``cut`` bytes, like a reset connection."""

    def __init__(self, data: bytes, cut: int) -> None:
        self.data, self.cut = data, cut

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.data[: self.cut]
        raise httpx.ReadError("connection reset")


def mock_client(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


class _Bytes(httpx.AsyncByteStream):
    """A body that is streamed, as off a socket (``content=`` would be read in advance)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.data


def _response(status: int, body: bytes | httpx.AsyncByteStream, **headers: Any) -> httpx.Response:
    fixed = {k.replace("_", "-"): str(v) for k, v in headers.items()}
    stream = _Bytes(body) if isinstance(body, bytes) else body
    return httpx.Response(status, headers=fixed, stream=stream)


async def test_a_server_ignoring_range_means_starting_over(disk: Disk) -> None:
    """A 200 to a resume request restarts the file: no mix of two transfers is ever kept."""
    ranges: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        ranges.append(request.headers.get("range"))
        body: bytes | httpx.AsyncByteStream = BODY if len(ranges) > 1 else _CutStream(BODY, 70_000)
        return _response(200, body, content_type="audio/wav", content_length=len(BODY))

    job = transfer(disk)
    async with mock_client(handler) as client:
        with capture_logs() as logs:
            await fetch(client, DownloadSource(url="https://s.example/a.wav"), job, CONFIG, LOG)
    assert ranges == [None, "bytes=70000-", None]
    assert job.partial.sha256 == hashlib.sha256(BODY).hexdigest()
    assert [e["event"] for e in logs if "restarted" in e["event"]] == [
        "recording.download_restarted"]


async def test_a_content_range_that_does_not_continue_starts_over(disk: Disk) -> None:
    """A 206 for other bytes than the ones asked for is not appended."""
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            return _response(200, _CutStream(BODY, 1000), content_type="audio/wav",
                             content_length=len(BODY))
        if calls == 2:
            return _response(206, BODY[10:], content_type="audio/wav",
                             content_range=f"bytes 10-{len(BODY) - 1}/{len(BODY)}")
        return _response(200, BODY, content_type="audio/wav", content_length=len(BODY))

    job = transfer(disk)
    async with mock_client(handler) as client:
        await fetch(client, DownloadSource(url="https://s.example/a.wav"), job, CONFIG, LOG)
    assert job.partial.sha256 == hashlib.sha256(BODY).hexdigest()
    assert calls == 3


@pytest.mark.parametrize("body", [
    b'<?xml version="1.0"?><Error><Code>AccessDenied</Code></Error>' + b" " * 100,
    b"<!DOCTYPE html><html><body>502 Bad Gateway</body></html>" + b" " * 100,
    b'  {"error": "expired"}',
])
async def test_an_error_document_is_caught_whatever_its_label(disk: Disk, body: bytes) -> None:
    """An error body labelled application/octet-stream is still recognised and refused."""

    def handler(request: httpx.Request) -> httpx.Response:
        return _response(200, body, content_type="application/octet-stream")

    async with mock_client(handler) as client:
        with pytest.raises(NotARecordingError, match="error document"):
            await fetch(client, DownloadSource(url="https://s.example/a"), transfer(disk),
                        CONFIG, LOG)


async def test_an_encoded_body_is_refused(disk: Disk) -> None:
    """A gzip-encoded reply would be stored compressed: refused rather than archived wrong."""

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["accept-encoding"] == "identity"
        return _response(200, b"\x1f\x8b" + b"\0" * 100, content_type="audio/wav",
                         content_encoding="gzip")

    async with mock_client(handler) as client:
        with pytest.raises(NotARecordingError, match="gzip"):
            await fetch(client, DownloadSource(url="https://s.example/a"), transfer(disk),
                        CONFIG, LOG)


async def test_an_unannounced_body_over_max_size_is_cut_off(disk: Disk) -> None:
    """Without Content-Length the limit is enforced while streaming."""

    class Endless(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            while True:
                yield b"\0" * 65536

    def handler(request: httpx.Request) -> httpx.Response:
        return _response(200, Endless(), content_type="audio/wav")

    job = transfer(disk)
    async with mock_client(handler) as client:
        with pytest.raises(TooLargeError):
            await fetch(client, DownloadSource(url="https://s.example/a"), job,
                        ArchiveConfig(max_size=1_000_000), LOG)
    assert job.partial.size <= 1_000_000
