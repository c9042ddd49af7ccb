"""The simulated calls: one frozen script per call, its state computed from the clock.

Nothing advances on a timer. A call's phase (pending, live, ended) and each recording's status
are pure functions of its script and ``now``, so a world of 100 000 calls costs a dict entry
each and nothing per tick, and a test can drive time with a fake clock instead of sleeping.

Timeline of one script (times relative to ``created_at``)::

    starts_after        -> live (None, or later than join_timeout: nobody ever joins)
    starts_after+lasts  -> ended (lasts None: live until World.end_call)
    join_timeout        -> ended unjoined, when nobody joined
    end + ready_after   -> each recording available (or failed); processing before that
    vanishes_after      -> every endpoint answers 404 for the call from then on
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

PROVIDERS = ("ultravox", "envoy", "apifycloud")

# What each platform's recordings usually are (PROVIDERS.md); a script may say otherwise.
DEFAULT_CONTENT_TYPES = {
    "ultravox": "audio/wav",
    "envoy": "audio/mp4",
    "apifycloud": "video/mp4",
}


class Phase(enum.Enum):
    """Where a simulated call is at some instant."""

    PENDING = "pending"
    LIVE = "live"
    ENDED = "ended"


class RecordingPhase(enum.Enum):
    """Where a simulated recording is; it does not exist before its call goes live."""

    PROCESSING = "processing"
    AVAILABLE = "available"
    FAILED = "failed"


def _new_id() -> str:
    """A random UUID4 string, about five times cheaper than ``str(uuid.uuid4())``."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass(frozen=True, kw_only=True, slots=True)
class RecordingScript:
    """One recording of a call: when it is ready, whether it fails, and what its bytes are.

    The bytes are generated from ``seed`` (from ``id`` when None), so any process holding the
    script can compute the expected digest without anyone storing the content.
    """

    id: str = field(default_factory=_new_id)
    ready_after: float = 1.0  # seconds after the call ends
    fails: bool = False
    size: int = 64 * 1024
    content_type: str | None = None  # None: the provider's usual type
    seed: int | None = None

    @property
    def content_key(self) -> bytes:
        """What the content generator is keyed by."""
        return b"seed:%d" % self.seed if self.seed is not None else b"id:" + self.id.encode()


@dataclass(frozen=True, kw_only=True, slots=True)
class CallScript:
    """Everything that will ever happen to one simulated call, fixed when it is added.

    Provider oddities: ``end_reason`` and ``recording_enabled`` are Ultravox's,
    ``direct_recording`` makes its ``/recording`` answer 200 with the bytes instead of 302;
    ``final_status`` is Envoy's status once ended (default COMPLETED, or NO_ANSWER for a call
    nobody joined). Ultravox and Envoy expose only the first recording (one per call).
    """

    provider: str
    call_id: str
    created_at: float
    starts_after: float | None = 0.0
    lasts: float | None = 10.0
    join_timeout: float = 30.0
    recordings: tuple[RecordingScript, ...] = ()
    end_reason: str = "hangup"
    recording_enabled: bool = True
    direct_recording: bool = False
    final_status: str | None = None
    vanishes_after: float | None = None
    ended_at: float | None = None  # set by World.end_call; wins over the scripted end
    metadata: Mapping[str, str] = field(default_factory=dict)

    @property
    def joined_at(self) -> float | None:
        """When the call goes live; None when nobody ever joins."""
        if self.starts_after is None or self.starts_after > self.join_timeout:
            return None
        joined = self.created_at + self.starts_after
        if self.ended_at is not None and self.ended_at <= joined:
            return None
        return joined

    @property
    def end_time(self) -> float | None:
        """When the call ends; None while it is scripted to last until ended explicitly."""
        joined = self.joined_at
        scripted: float | None = None
        if joined is not None:
            if self.lasts is not None:
                scripted = joined + self.lasts
        elif self.starts_after is None or self.starts_after > self.join_timeout:
            scripted = self.created_at + self.join_timeout
        if self.ended_at is None:
            return scripted
        return self.ended_at if scripted is None else min(scripted, self.ended_at)

    @property
    def unjoined(self) -> bool:
        """True when the call ends (or will end) without anyone having joined."""
        return self.joined_at is None

    def gone(self, now: float) -> bool:
        """True once the provider has forgotten the call (answers 404)."""
        return self.vanishes_after is not None and now >= self.created_at + self.vanishes_after

    def phase(self, now: float) -> Phase:
        end = self.end_time
        if end is not None and now >= end:
            return Phase.ENDED
        joined = self.joined_at
        if joined is not None and now >= joined:
            return Phase.LIVE
        return Phase.PENDING

    def ready_at(self, recording: RecordingScript) -> float | None:
        """When the recording settles (available or failed); None while unknown or never."""
        end = self.end_time
        if end is None or self.joined_at is None:
            return None
        return end + recording.ready_after

    def recording_phase(self, recording: RecordingScript, now: float) -> RecordingPhase | None:
        """The recording's status at ``now``; None while it does not exist."""
        joined = self.joined_at
        if joined is None or now < joined:
            return None
        ready = self.ready_at(recording)
        if ready is None or now < ready:
            return RecordingPhase.PROCESSING
        return RecordingPhase.FAILED if recording.fails else RecordingPhase.AVAILABLE

    def content_type(self, recording: RecordingScript) -> str:
        """The recording's media type as this call's provider serves it."""
        return recording.content_type or DEFAULT_CONTENT_TYPES[self.provider]

    def recording(self, recording_id: str) -> RecordingScript | None:
        for rec in self.recordings:
            if rec.id == recording_id:
                return rec
        return None

    def stable_int(self, salt: str) -> int:
        """A number derived from the call id, for fields that must look varied but not change."""
        digest = hashlib.blake2b(f"{salt}:{self.call_id}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big")


def new_call_id(provider: str) -> str:
    """A fresh id in the provider's format (Envoy: ``call_<uuid>``, others: a bare UUID4)."""
    if provider not in DEFAULT_CONTENT_TYPES:
        raise ValueError(f"unknown provider {provider!r}")
    return f"call_{_new_id()}" if provider == "envoy" else _new_id()


class World:
    """Every simulated call, per provider; the clock is injectable so tests need not sleep."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._calls: dict[str, dict[str, CallScript]] = {p: {} for p in PROVIDERS}

    def __len__(self) -> int:
        return sum(len(calls) for calls in self._calls.values())

    def add(self, script: CallScript) -> CallScript:
        """Add (or replace) a call."""
        if script.provider not in self._calls:
            raise ValueError(f"unknown provider {script.provider!r}")
        self._calls[script.provider][script.call_id] = script
        return script

    def add_call(
        self,
        provider: str,
        call_id: str | None = None,
        *,
        recordings: Iterable[RecordingScript] | None = None,
        created_at: float | None = None,
        **script: Any,
    ) -> CallScript:
        """Add a call with a generated id; by default it has one recording.

        Keyword arguments are ``CallScript`` fields; ``recordings=()`` means no recording.
        """
        recs = (RecordingScript(),) if recordings is None else tuple(recordings)
        return self.add(
            CallScript(
                provider=provider,
                call_id=call_id or new_call_id(provider),
                created_at=self.clock() if created_at is None else created_at,
                recordings=recs,
                **script,
            )
        )

    def get(self, provider: str, call_id: str) -> CallScript | None:
        """The call as the provider sees it now: None when unknown or vanished."""
        calls = self._calls.get(provider)
        script = None if calls is None else calls.get(call_id)
        if script is None or (script.vanishes_after is not None and script.gone(self.clock())):
            return None
        return script

    def script(self, provider: str, call_id: str) -> CallScript:
        """The call's script even after it vanished; KeyError when unknown."""
        return self._calls[provider][call_id]

    def end_call(
        self, provider: str, call_id: str, *, reason: str | None = None, status: str | None = None
    ) -> CallScript:
        """End the call now (a no-op for one already ended); recordings count from now.

        Only state changes: the simulator fires no provider webhook. ``reason`` overrides
        Ultravox's ``endReason``, ``status`` Envoy's final status.
        """
        script = self.script(provider, call_id)
        now = self.clock()
        if script.phase(now) is Phase.ENDED:
            return script
        changes: dict[str, Any] = {"ended_at": now}
        if reason is not None:
            changes["end_reason"] = reason
        if status is not None:
            changes["final_status"] = status
        return self.add(dataclasses.replace(script, **changes))

    def count(self, provider: str) -> int:
        """How many calls the provider has (vanished ones included): the list index's key."""
        return len(self._calls[provider])

    def calls(self, provider: str | None = None) -> Iterator[CallScript]:
        providers = PROVIDERS if provider is None else (provider,)
        for name in providers:
            yield from self._calls[name].values()
