"""Where a recording lives under ``archive_dir``: PURE, built only from sanitized ids.

    <provider>/<call id>/<recording id><extension>

Ids come from providers and users, so each becomes one path component by these rules:

* An id made only of ``[a-z0-9._-]``, starting with a letter or digit and at most
  ``MAX_PLAIN`` characters, is used as it is: real ids (UUIDs, ``call_<uuid>``) stay readable.
* Anything else is sanitized (every other character becomes ``_``, leading dots go, the result
  is cut to ``MAX_PLAIN``) and gets ``~`` plus a digest of the *original* id. A plain name never
  contains ``~`` and every sanitized name does, so the two kinds can never meet, and two
  different ids can only share a name if their 96-bit digests collide.

Upper case counts as "anything else": on a case-insensitive file system ``ABC`` and ``abc``
would otherwise be one file. No component can be empty, ``.`` or ``..``, hold a separator or
NUL, or start with a dot (so nothing can land in ``.partial``, the downloads' scratch folder),
whatever unicode tricks the id plays. The extension comes from a fixed table, so the final
name is ``name + extension`` with one of four fixed four-character extensions: distinct names
give distinct files.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import PurePosixPath

MAX_PLAIN = 100
_DIGEST_HEX = 24  # 96 bits
_PLAIN = re.compile(r"[a-z0-9][a-z0-9._-]*", re.ASCII)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]", re.ASCII)

EXTENSIONS = {
    "audio/wav": ".wav",
    "audio/x-wav": ".wav",
    "audio/wave": ".wav",
    "audio/mp4": ".m4a",
    "audio/m4a": ".m4a",
    "audio/x-m4a": ".m4a",
    "video/mp4": ".mp4",
}
DEFAULT_EXTENSION = ".bin"
PARTIAL_DIR = ".partial"  # scratch space for downloads in progress, never a final name


def component(raw: str) -> str:
    """One safe, injective path component for the id ``raw``."""
    if len(raw) <= MAX_PLAIN and _PLAIN.fullmatch(raw):
        return raw
    cleaned = _UNSAFE.sub("_", raw).lstrip(".")[:MAX_PLAIN] or "id"
    digest = hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:_DIGEST_HEX]
    return f"{cleaned}~{digest}"


def extension(content_type: str | None) -> str:
    """``.wav``, ``.m4a``, ``.mp4`` for the media types we know, ``.bin`` for anything else."""
    if not content_type:
        return DEFAULT_EXTENSION
    kind = content_type.split(";", 1)[0].strip().lower()
    return EXTENSIONS.get(kind, DEFAULT_EXTENSION)


def is_known_type(content_type: str | None) -> bool:
    """Whether the media type names a format we have an extension for."""
    return extension(content_type) != DEFAULT_EXTENSION


def final_path(provider: str, call_id: str, recording_id: str,
               content_type: str | None) -> PurePosixPath:
    """The recording's path relative to ``archive_dir``; always three safe components."""
    name = component(recording_id) + extension(content_type)
    return PurePosixPath(component(provider), component(call_id), name)


def final_candidates(provider: str, call_id: str, recording_id: str) -> list[PurePosixPath]:
    """Every path ``final_path`` can give the recording, one per extension, in a fixed order.

    ``.wav``, ``.m4a``, ``.mp4`` (the table's order), then ``.bin``: what to look for when the
    content type a download was stored under is not known.
    """
    folder = PurePosixPath(component(provider), component(call_id))
    name = component(recording_id)
    extensions = dict.fromkeys([*EXTENSIONS.values(), DEFAULT_EXTENSION])
    return [folder / (name + ext) for ext in extensions]
