"""What ``track`` accepts, for the command line and the HTTP API alike.

One function decides whether a call may be tracked (provider known and configured, call id
well-formed, metadata within its limits, the per-call webhook URL allowed by
``[call_webhooks]``), so the API accepts exactly what ``callwatch track`` accepts. Messages
name the field (``metadata``, ``webhook``); the CLI shows them as its options.

The webhook URL is checked twice here: its text (``check_input``, pure), then the addresses
its host resolves to (``check_resolution`` with the resolver's answer). A host that does not
resolve now is accepted: the relay resolves and checks again at every attempt, and that
check (against the address actually connected to) is the one that holds.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from worker.addresses import check_resolved, check_url
from worker.config import PROVIDER_NAMES, Config
from worker.errors import UsageError
from worker.providers import validate_call_id

MAX_METADATA_BYTES = 16 * 1024
MAX_METADATA_DEPTH = 32


class TrackInputError(UsageError):
    """The call cannot be tracked as given (exit 2, HTTP 400); the message is one line."""


@dataclass(frozen=True, kw_only=True, slots=True)
class TrackInput:
    """A validated ``track`` request."""

    provider: str
    call_id: str
    metadata: dict[str, Any] = field(default_factory=dict)
    webhook: str | None = None


def check_input(config: Config, provider: str, call_id: str,
                metadata: str | dict[str, Any] | None, webhook: str | None) -> TrackInput:
    """Validate everything but DNS; raise ``TrackInputError`` naming the field.

    ``metadata`` is the JSON text (the command line) or the object already parsed (the API).
    """
    if provider not in config.providers:
        known = "not a provider" if provider not in PROVIDER_NAMES else "not configured"
        raise TrackInputError(f"unknown provider {provider[:40]!r} ({known}; configured: "
                              f"{', '.join(sorted(config.providers))})")
    if (reason := validate_call_id(provider, call_id)) is not None:
        raise TrackInputError(f"malformed {provider} call id {call_id[:80]!r}: {reason}")
    if metadata is None:
        meta: dict[str, Any] = {}
    elif isinstance(metadata, str):
        meta = parse_metadata(metadata)
    else:
        meta = check_metadata(metadata)
    if webhook is not None:
        if not _utf8(webhook):
            raise TrackInputError("webhook is not valid Unicode text")
        policy = config.call_webhooks
        if (problem := check_url(webhook, allow_hosts=policy.allow_hosts,
                                 allow_private=policy.allow_private)) is not None:
            raise TrackInputError(f"webhook {problem}")
    return TrackInput(provider=provider, call_id=call_id, metadata=meta, webhook=webhook)


def webhook_host(url: str) -> tuple[str, int]:
    """The host and port a (checked) webhook URL connects to."""
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


def check_resolution(config: Config, url: str, addresses: Iterable[str]) -> None:
    """Refuse the webhook when its host resolved to an address it must not reach."""
    if config.call_webhooks.allow_private:
        return
    host, _port = webhook_host(url)
    if (problem := check_resolved(host, addresses)) is not None:
        raise TrackInputError(f"webhook {problem}")


def parse_metadata(text: str) -> dict[str, Any]:
    """A JSON object of at most 16 KiB, nested at most 32 deep, that is Unicode text."""
    if len(text) > 4 * MAX_METADATA_BYTES:  # never parse a document we will refuse anyway
        raise TrackInputError(_too_large())
    try:
        meta = json.loads(text, parse_constant=_not_json)
    except json.JSONDecodeError as exc:
        raise TrackInputError(f"metadata is not valid JSON: {exc.msg} at {exc.pos}") from None
    except RecursionError:
        raise TrackInputError(_too_deep()) from None
    except ValueError as exc:  # NaN/Infinity, huge numbers
        raise TrackInputError(f"metadata is not valid JSON: {str(exc)[:100]}") from None
    if not isinstance(meta, dict):
        raise TrackInputError("metadata must be a JSON object, like '{\"ticket\": 42}'")
    return check_metadata(meta)


def check_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    """The limits on parsed metadata: depth first, so encoding it cannot recurse too far."""
    if depth(meta) > MAX_METADATA_DEPTH:
        raise TrackInputError(_too_deep())
    encoded = json.dumps(meta, ensure_ascii=False)
    if not _utf8(encoded):
        # Event bodies are UTF-8: a lone surrogate here would fail every event of the call.
        raise TrackInputError("metadata holds a lone surrogate (like \\ud800): not Unicode text")
    if len(encoded.encode("utf-8")) > MAX_METADATA_BYTES:
        raise TrackInputError(_too_large())
    return meta


def depth(value: Any) -> int:
    """How deep JSON containers nest (a scalar is 0, ``{}`` is 1); iterative, so no input
    can exhaust the stack."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
            deepest = max(deepest, level + 1)
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
            deepest = max(deepest, level + 1)
    return deepest


def _too_large() -> str:
    return "metadata is larger than 16 KiB of JSON: keep references, not documents"


def _too_deep() -> str:
    return f"metadata is nested deeper than {MAX_METADATA_DEPTH} levels"


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON value")


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
