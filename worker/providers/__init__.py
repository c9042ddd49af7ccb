"""The call platforms callwatch knows, one module each, all behind ``base.Provider``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

import httpx

from worker.config import ProviderConfig
from worker.providers.apifycloud import ApifycloudProvider
from worker.providers.base import Provider
from worker.providers.envoy import EnvoyProvider
from worker.providers.ultravox import UltravoxProvider

_T = TypeVar("_T")
ProviderFactory = Callable[[ProviderConfig, httpx.AsyncClient], Provider]

PROVIDER_CLASSES: Mapping[str, ProviderFactory] = {
    UltravoxProvider.name: UltravoxProvider,
    EnvoyProvider.name: EnvoyProvider,
    ApifycloudProvider.name: ApifycloudProvider,
}

# The same checks the adapters apply, usable before any client exists (``callwatch track``).
_CALL_ID_CHECKS: Mapping[str, Callable[[str], str | None]] = {
    UltravoxProvider.name: UltravoxProvider.validate_call_id,
    EnvoyProvider.name: EnvoyProvider.validate_call_id,
    ApifycloudProvider.name: ApifycloudProvider.validate_call_id,
}


def build_provider(config: ProviderConfig, client: httpx.AsyncClient) -> Provider:
    """The adapter for ``config.name``, sharing the daemon's one HTTP client."""
    return _lookup(PROVIDER_CLASSES, config.name)(config, client)


def validate_call_id(provider: str, call_id: str) -> str | None:
    """Why ``call_id`` cannot be one of ``provider``'s ids (None if it can), without a client."""
    return _lookup(_CALL_ID_CHECKS, provider)(call_id)


def _lookup(table: Mapping[str, _T], name: str) -> _T:
    try:
        return table[name]
    except KeyError:
        known = ", ".join(table)
        raise ValueError(f"unknown provider {name!r} (known: {known})") from None


__all__ = ["PROVIDER_CLASSES", "Provider", "ProviderFactory", "build_provider",
           "validate_call_id"]
