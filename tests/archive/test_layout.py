"""The final path of a recording: pure, sanitized, injective, always inside archive_dir."""

from __future__ import annotations

import posixpath
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from worker.archive.layout import (
    EXTENSIONS,
    MAX_PLAIN,
    PARTIAL_DIR,
    component,
    extension,
    final_candidates,
    final_path,
)

HOSTILE = [
    "../x", "../../etc/passwd", "/etc/passwd", "..", ".", "", ".partial", ".hidden",
    "a\x00b", "\x00", "x" * 500, "a/b", "a\\b", "\u202egnp.exe", "\uff0e\uff0e\uff0fetc",
    "e\u0301", "\ud800", "CON", "a:b", "~", "x~0123456789abcdef01234567", "ABC", "abc ",
    "\n", "\u2215etc\u2215passwd", "%2e%2e%2f",
]


def _safe(name: str) -> bool:
    return (name not in ("", ".", "..") and not name.startswith(".") and name.isascii()
            and "/" not in name and "\\" not in name and "\x00" not in name
            and len(name.encode()) <= 255 and name.isprintable())


def test_plain_ids_are_kept_as_they_are() -> None:
    """Ordinary provider ids (UUIDs, call_<uuid>) are used verbatim, so the archive is readable."""
    for raw in ("3f2b8a1e-5c4d-4e6f-8a9b-0c1d2e3f4a5b", "call_3f2b8a1e-5c4d", "rec.1_a-b"):
        assert component(raw) == raw


@pytest.mark.parametrize("raw", HOSTILE)
def test_hostile_ids_become_one_safe_component(raw: str) -> None:
    """Traversal, absolute paths, NUL, 500 characters and unicode tricks give one safe name."""
    name = component(raw)
    assert _safe(name), name


def test_hostile_ids_keep_a_readable_hint() -> None:
    """A sanitized id keeps its safe characters before the digest, for the humans reading ls."""
    assert component("../../etc/passwd").startswith("_.._etc_passwd~")
    assert component("x" * 500).startswith("x" * MAX_PLAIN + "~")


def test_extension_comes_from_the_content_type() -> None:
    """audio/wav -> .wav, audio/mp4 -> .m4a, video/mp4 -> .mp4, anything else -> .bin."""
    assert extension("audio/wav") == ".wav"
    assert extension("Audio/WAV; codecs=1") == ".wav"
    assert extension("audio/mp4") == ".m4a"
    assert extension("video/mp4") == ".mp4"
    for other in (None, "", "text/html", "application/octet-stream", "video/webm", "../wav"):
        assert extension(other) == ".bin"


@given(provider=st.text(), call_id=st.text(), recording_id=st.text(),
       content_type=st.one_of(st.none(), st.text(), st.sampled_from(["audio/wav", "video/mp4"])))
@example(provider="..", call_id="/etc", recording_id="../../../x", content_type="audio/wav")
@example(provider=".partial", call_id=".", recording_id="\x00", content_type=None)
def test_no_id_escapes_the_archive(provider: str, call_id: str, recording_id: str,
                                   content_type: str | None) -> None:
    """Whatever the ids, the path is three safe components that resolve inside archive_dir."""
    path = final_path(provider, call_id, recording_id, content_type)
    assert len(path.parts) == 3
    assert all(_safe(part) for part in path.parts)
    assert path.parts[0] != PARTIAL_DIR
    root = Path("/srv/archive")
    resolved = posixpath.normpath(str(root / path))
    assert resolved.startswith(str(root) + "/") and resolved.count("/") == 5


@given(a=st.text(), b=st.text())
@example(a="abc", b="ABC")
@example(a="a/b", b="a_b")
@example(a="x" * 101, b="x" * 102)
@example(a="a_b", b=component("a/b"))
def test_different_ids_never_share_a_name(a: str, b: str) -> None:
    """Two different ids give two different names, even on a case-insensitive file system."""
    if a != b:
        assert component(a).lower() != component(b).lower()


@given(a=st.tuples(st.text(), st.text(), st.text()), b=st.tuples(st.text(), st.text(), st.text()),
       ctype=st.sampled_from([None, "audio/wav", "audio/mp4", "video/mp4", "text/plain"]))
def test_different_recordings_never_share_a_path(a: tuple[str, str, str],
                                                 b: tuple[str, str, str],
                                                 ctype: str | None) -> None:
    """Distinct (provider, call, recording) triples never map to the same file."""
    if a != b:
        assert final_path(*a, ctype) != final_path(*b, ctype)


def test_the_path_is_relative() -> None:
    """Paths are relative to archive_dir, as events report them."""
    path = final_path("ultravox", "c", "r", "audio/wav")
    assert path == PurePosixPath("ultravox/c/r.wav")
    assert not path.is_absolute()


def test_the_candidates_are_every_extension_once_in_a_fixed_order() -> None:
    """.wav, .m4a, .mp4, then .bin: each once, the same every time, all beside each other."""
    found = final_candidates("envoy", "call_1", "rec")
    assert [p.as_posix() for p in found] == ["envoy/call_1/rec.wav", "envoy/call_1/rec.m4a",
                                             "envoy/call_1/rec.mp4", "envoy/call_1/rec.bin"]
    assert found == final_candidates("envoy", "call_1", "rec")


@given(provider=st.text(), call_id=st.text(), recording_id=st.text(),
       content_type=st.one_of(st.none(), st.text(), st.sampled_from(sorted(EXTENSIONS))))
@example(provider="..", call_id="/etc", recording_id="../x", content_type="audio/x-m4a")
def test_the_final_path_is_always_a_candidate(provider: str, call_id: str, recording_id: str,
                                              content_type: str | None) -> None:
    """Whatever type a download was stored under, the lookup tries its path (sanitized too)."""
    candidates = final_candidates(provider, call_id, recording_id)
    assert len(set(candidates)) == len(candidates) == 4
    assert final_path(provider, call_id, recording_id, content_type) in candidates
