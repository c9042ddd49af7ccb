"""How ``callwatch status`` shows the archive: each recording, and whether archiving is paused.

Kept here so ``status.py`` only asks for lines; the digest is shown in full, because the one
reason to look it up is to compare it with a file.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from worker.archive.base import ArchiveState, DownloadInfo, DownloadProgress
from worker.events import rfc3339
from worker.model import RecordingStatus, TrackedCall


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def overview_lines(state: ArchiveState, now: float) -> list[str]:
    """The overview's archive line(s): loud when paused, quiet when all is archived."""
    if state.paused_reason is not None:
        since = "" if state.paused_since is None else f" for {_age(now - state.paused_since)}"
        return [f"archive paused: {state.paused_reason}{since}; {state.pending} recording(s) "
                f"waiting (archiving resumes by itself once the archive folder takes files)"]
    if state.pending:
        return [f"archive: {state.pending} recording(s) waiting to be archived"]
    return []


def state_json(state: ArchiveState) -> dict[str, Any]:
    return {"paused": state.paused_reason, "paused_since": rfc3339(state.paused_since),
            "pending": state.pending}


def recording_lines(call: TrackedCall, downloads: Mapping[str, DownloadInfo],
                    now: float) -> list[str]:
    """One block per recording: state and size, then path and digest, or download progress."""
    lines: list[str] = []
    for rec in call.recordings:
        size = rec.archive_size if rec.archive_size is not None else rec.size
        lines.append(f"  {rec.id}  {rec.status}"
                     + (f"  {size} bytes" if size is not None else "")
                     + (f"  {rec.content_type}" if rec.content_type else ""))
        if rec.archive_path is not None:
            lines.append(f"      path    {rec.archive_path}")
            lines.append(f"      sha256  {rec.archive_sha256}")
        info = downloads.get(rec.id)
        if rec.status == RecordingStatus.AVAILABLE and call.terminal is None and info:
            lines.append(f"      archive {_progress(info, now)}")
        if rec.reason:
            lines.append(f"      reason  {rec.reason}")
    return lines


def size_text(n: float) -> str:
    """Bytes for people: ``512 B``, ``3.4 KiB``, ``812.0 MiB``, ``1.2 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def progress_text(progress: DownloadProgress, now: float) -> str:
    """``412.0 MiB of 800.0 MiB (51%), 5.2 MiB/s, about 1m left (as of 2s ago)``."""
    text = size_text(progress.bytes)
    if progress.total:
        text += f" of {size_text(progress.total)} ({100 * progress.bytes // progress.total}%)"
    text += f", {size_text(progress.rate)}/s"
    if (eta := progress.eta) is not None:
        text += f", about {_age(eta)} left"
    if now - progress.at >= 1:
        text += f" (as of {_age(now - progress.at)} ago)"
    return text


def _progress(info: DownloadInfo, now: float) -> str:
    if info.in_progress:
        text = "downloading now"
        if info.progress is not None:
            text += f": {progress_text(info.progress, now)}"
    elif info.next_attempt_at is not None and info.next_attempt_at > now:
        text = f"next attempt in {_age(info.next_attempt_at - now)}"
    else:
        text = "waiting for a download slot"
    if info.attempts:
        text += f"; {info.attempts} failed attempt(s)"
    if info.last_error:
        text += f"; last error: {info.last_error}"
    return text
