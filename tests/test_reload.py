"""What a reload reports: the keys that changed, and a rejection that stays in STATUS=."""

from __future__ import annotations

import socket
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from worker.daemon import changed_keys
from worker.notify import Notifier

toml_values = st.recursive(
    st.one_of(st.integers(), st.text(max_size=5), st.booleans()),
    lambda inner: st.dictionaries(st.text("abc", min_size=1, max_size=2), inner, max_size=3),
    max_leaves=8)
documents = st.dictionaries(st.text("abc", min_size=1, max_size=2), toml_values, max_size=4)


def test_changed_keys_names_each_difference() -> None:
    """Changed, added and removed keys come out dotted; tables of an array by index."""
    old = {"tracking": {"poll_interval": 10, "recording_grace": 900},
           "webhooks": [{"url": "https://a", "secret_env": "A"}, {"url": "https://b"}],
           "worker": {"database": "x.db"}}
    new = {"tracking": {"poll_interval": 5, "recording_grace": 900},
           "webhooks": [{"url": "https://a", "secret_env": "B"}, {"url": "https://b"}],
           "api": {"listen": "127.0.0.1:8787"}}
    assert changed_keys(old, new) == ["api", "tracking.poll_interval", "webhooks[0].secret_env",
                                      "worker"]
    three = {**new, "webhooks": [*new["webhooks"], {"url": "https://c"}]}
    assert changed_keys(new, three) == ["webhooks"]


@given(documents, documents)
def test_changed_keys_is_empty_exactly_when_equal(old: dict[str, object],
                                                  new: dict[str, object]) -> None:
    """No key is reported for identical documents, at least one for different ones."""
    assert changed_keys(old, old) == []
    assert (changed_keys(old, new) == []) == (old == new)


def test_a_note_prefixes_every_status_until_cleared(tmp_path: Path) -> None:
    """A rejected reload's note leads each STATUS= line (not other messages) until cleared."""
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        notifier = Notifier(path)
        notifier.note = "reload rejected: x"
        notifier.send(STATUS="tracking 3 calls")
        notifier.send(WATCHDOG=1)
        notifier.note = None
        notifier.send(STATUS="tracking 4 calls")
        notifier.close()
        got = [server.recv(4096).decode() for _ in range(3)]
    assert got == ["STATUS=reload rejected: x; tracking 3 calls", "WATCHDOG=1",
                   "STATUS=tracking 4 calls"]
