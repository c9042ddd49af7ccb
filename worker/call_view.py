"""One tracked call as JSON: the shape ``status --json`` and the HTTP API share.

It lives here, below both the command line and the API, so that neither imports the other
(the API used to import ``cli.status`` for it; the layering contracts in pyproject.toml
forbid that now).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from worker.archive.base import DownloadInfo, DownloadProgress
from worker.events import call_data, rfc3339
from worker.model import RecordingStatus, TrackedCall


def state_of(call: TrackedCall) -> str:
    """The one word a call's state is shown as: its terminal state, else ``untracked``, else
    ``set_aside``, else its status."""
    if call.terminal:
        return str(call.terminal)
    if call.untracked_at is not None:
        return "untracked"
    return "set_aside" if call.set_aside else str(call.status)


def call_json(call: TrackedCall) -> dict[str, Any]:
    """One call as ``status --json`` and the HTTP API show it."""
    data = call_data(call)
    data["state"] = state_of(call)
    data["tracked_at"] = rfc3339(call.tracked_at)
    data["next_poll_at"] = (rfc3339(call.next_poll_at)
                            if call.terminal is None and call.untracked_at is None else None)
    data["untracked_at"] = rfc3339(call.untracked_at)
    data["consecutive_failures"] = call.consecutive_failures
    return data


def downloads_json(call: TrackedCall, downloads: Mapping[str, DownloadInfo]) -> dict[str, Any]:
    """Per recording still waiting to be archived: attempts, last error, next attempt."""
    return {
        rec.id: {"attempts": info.attempts, "last_error": info.last_error,
                 "next_attempt_at": rfc3339(info.next_attempt_at),
                 "in_progress": info.in_progress, "progress": progress_json(info.progress)}
        for rec in call.recordings
        if rec.status == RecordingStatus.AVAILABLE and call.terminal is None
        and (info := downloads.get(rec.id)) is not None
    }


def with_live(downloads: Mapping[str, DownloadInfo],
              live: Mapping[str, DownloadProgress]) -> dict[str, DownloadInfo]:
    """``downloads`` as the database has them, with the archiver's live progress (fresher:
    the database gets it only every few seconds) for the recordings it is fetching."""
    merged = dict(downloads)
    for recording_id, progress in live.items():
        if (info := merged.get(recording_id)) is not None:
            merged[recording_id] = replace(info, in_progress=True, progress=progress)
    return merged


def progress_json(progress: DownloadProgress | None) -> dict[str, Any] | None:
    """A download's progress for ``status --json`` and the HTTP API; None when none known."""
    if progress is None:
        return None
    eta = progress.eta
    return {"bytes": progress.bytes, "total": progress.total,
            "bytes_per_second": round(progress.rate, 1),
            "eta_seconds": None if eta is None else round(eta, 1),
            "started_at": rfc3339(progress.started_at), "measured_at": rfc3339(progress.at)}
