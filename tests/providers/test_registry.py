"""build_provider: one adapter class per configured provider name."""

from __future__ import annotations

import dataclasses

import httpx
import pytest

from tests.providers.support import make_config
from worker.config import PROVIDER_NAMES
from worker.providers import PROVIDER_CLASSES, build_provider, validate_call_id
from worker.providers.apifycloud import ApifycloudProvider
from worker.providers.envoy import EnvoyProvider
from worker.providers.ultravox import UltravoxProvider


def test_every_configurable_provider_has_an_adapter() -> None:
    """Each provider name config.py accepts maps to an adapter class of that name."""
    assert set(PROVIDER_CLASSES) == set(PROVIDER_NAMES)


@pytest.mark.parametrize(
    ("name", "cls"),
    [("ultravox", UltravoxProvider), ("envoy", EnvoyProvider),
     ("apifycloud", ApifycloudProvider)],
)
def test_build_provider(name: str, cls: type[object]) -> None:
    """build_provider returns the named adapter, whose name matches the config's."""
    adapter = build_provider(make_config(name), httpx.AsyncClient())
    assert isinstance(adapter, cls)
    assert adapter.name == name


def test_unknown_provider_is_refused() -> None:
    """An unknown provider name is a ValueError naming the known ones."""
    config = dataclasses.replace(make_config("ultravox"), name="skype")
    with pytest.raises(ValueError, match="known: ultravox, envoy, apifycloud"):
        build_provider(config, httpx.AsyncClient())


def test_secrets_do_not_show_in_adapter_reprs() -> None:
    """The key lives in the adapter's request headers only, not in its repr."""
    adapter = build_provider(make_config("envoy"), httpx.AsyncClient())
    assert "NEVER-LOG-ME" not in repr(adapter)


@pytest.mark.parametrize(
    ("name", "call_id", "valid"),
    [("ultravox", "3f2b8a1e-5c4d-4e6f-8a9b-0c1d2e3f4a5b", True), ("ultravox", "call_1", False),
     ("envoy", "call_1", True), ("envoy", "call 1", False),
     ("apifycloud", "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a", True), ("apifycloud", "", False)],
)
def test_validate_call_id_without_a_client(name: str, call_id: str, valid: bool) -> None:
    """The CLI can check an id with the adapter's own rule before any client exists."""
    assert (validate_call_id(name, call_id) is None) is valid


def test_validate_call_id_unknown_provider() -> None:
    """Checking an id for an unknown provider is a ValueError."""
    with pytest.raises(ValueError, match="unknown provider"):
        validate_call_id("skype", "x")
