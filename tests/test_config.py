"""``worker.config``: real TOML files in ``tmp_path`` -> frozen dataclasses, or every problem.

The environment is always passed in (``environ={...}``); nothing here reads or changes
``os.environ``.
"""

from __future__ import annotations

import base64
import re
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.config import (
    DEFAULT_BASE_URLS,
    TRACKING_KEYS,
    Config,
    ConfigError,
    ProviderConfig,
    TrackingConfig,
    WebhookConfig,
    WorkerConfig,
    config_path,
    load,
    parse,
)
from worker.secrets import Secret

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "config" / "callwatch.example.toml"
DOCS = ROOT / "docs" / "configuration.md"

WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"callwatch-test-webhook-secret-1").decode()
OTHER_WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"callwatch-test-webhook-secret-2").decode()
ULTRAVOX_KEY = "uvx.test-ultravox-key-4f1d9a"
ENVOY_KEY = "envoy-test-token-77c2e0"
WIDGET_KEY = "wk.test-widget-key-b81e"
SECRETS = (WEBHOOK_SECRET, OTHER_WEBHOOK_SECRET, ULTRAVOX_KEY, ENVOY_KEY, WIDGET_KEY)

ENVIRON = {
    "ULTRAVOX_API_KEY": ULTRAVOX_KEY,
    "ENVOY_API_KEY": ENVOY_KEY,
    "APIFYCLOUD_WIDGET_KEY": WIDGET_KEY,
    "CALLWATCH_WEBHOOK_SECRET": WEBHOOK_SECRET,
}

WORKER_KEYS = ("database", "archive_dir", "log_level")
PROVIDER_KEYS = (
    "base_url", "api_key_env", "api_key_file", "organization_id", "app_id",
    "widget_key_env", "widget_key_file", "concurrency", "rate_limit", *TRACKING_KEYS,
)
WEBHOOK_KEYS = ("url", "secret_env", "secret_file", "events", "retry_schedule", "timeout")
EVENT_TYPES = (
    "call.started", "call.ended", "recording.available", "recording.failed",
    "recording.archived", "recording.archive_failed", "call.completed", "call.tracking_failed",
)

# The example of CONTRACT.md's Config section, verbatim but for the two placeholder ids.
CONTRACT_EXAMPLE = """\
[worker]
database = "callwatch.db"          # SQLite file
archive_dir = "recordings"         # omit to disable archiving

[tracking]                         # defaults shown; each key may be repeated under [providers.X]
poll_interval = 10                 # while the call is live
pending_poll_interval = 30         # before it starts (created / scheduled)
recording_poll_interval = 5        # after it ended, while recordings are not settled
recording_grace = 900              # after the end, how long to wait for a recording to appear
not_found_grace = 300              # how long a call may answer 404 before tracking fails
max_tracking_age = 86400           # give up on a call tracked longer than this

[providers.ultravox]
base_url = "https://api.ultravox.ai"     # origin only; the adapter appends documented paths
api_key_env = "ULTRAVOX_API_KEY"         # or api_key_file = "ultravox.key"

[providers.envoy]
base_url = "https://tryenvoy.ai"
api_key_env = "ENVOY_API_KEY"
organization_id = "org_123"              # optional

[providers.apifycloud]
base_url = "https://video.apifycloud.io"
app_id = "app_456"                       # optional
widget_key_env = "APIFYCLOUD_WIDGET_KEY" # optional

[[webhooks]]
url = "https://hooks.example.com/calls"
secret_env = "CALLWATCH_WEBHOOK_SECRET"  # a whsec_ secret; or secret_file
events = ["call.ended", "call.completed"] # optional filter; default: every event
retry_schedule = [5, 300, 1800, 7200, 18000, 36000, 36000]  # seconds between attempts
timeout = 15
"""

# A valid config that cases below prepend their TOML to (top-level keys must come first).
BASE = """
[providers.ultravox]
api_key_env = "ULTRAVOX_API_KEY"
"""
HOOK = """
[[webhooks]]
url = "https://hooks.example.com/calls"
secret_env = "CALLWATCH_WEBHOOK_SECRET"
"""


def write(folder: Path, text: str, name: str = "callwatch.toml") -> Path:
    """Write a config file and return its absolute path, as problems name it."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path.resolve()


def problems_of(path: Path, environ: Mapping[str, str] | None = None) -> list[str]:
    """Load ``path``, expect a ConfigError, and return its problems."""
    with pytest.raises(ConfigError) as info:
        load(path, environ=ENVIRON if environ is None else environ)
    assert str(info.value) == "; ".join(info.value.problems)
    return info.value.problems


def assert_one_problem(problems: list[str], path: Path, key: str, fragment: str) -> None:
    """Exactly one problem, naming the file and the dotted key, saying ``fragment``."""
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{path}: {key}: "), problems
    assert fragment in problems[0], problems


# --------------------------------------------------------------------------- the whole file


def test_contract_example_parses_into_dataclasses(tmp_path: Path) -> None:
    """The full example of CONTRACT.md loads into exactly the values it spells out."""
    path = write(tmp_path, CONTRACT_EXAMPLE)
    config = load(path, environ=ENVIRON)

    assert isinstance(config, Config)
    assert config.source == path
    assert config.worker == WorkerConfig(
        database=tmp_path.resolve() / "callwatch.db",
        archive_dir=tmp_path.resolve() / "recordings",
        log_level="info",
    )
    tracking = TrackingConfig(
        poll_interval=10.0, pending_poll_interval=30.0, recording_poll_interval=5.0,
        recording_grace=900.0, not_found_grace=300.0, max_tracking_age=86400.0,
    )
    assert config.tracking == tracking
    assert list(config.providers) == ["ultravox", "envoy", "apifycloud"]
    assert config.providers["ultravox"] == ProviderConfig(
        name="ultravox", base_url="https://api.ultravox.ai", tracking=tracking,
        api_key=Secret(ULTRAVOX_KEY),
    )
    assert config.providers["envoy"] == ProviderConfig(
        name="envoy", base_url="https://tryenvoy.ai", tracking=tracking,
        api_key=Secret(ENVOY_KEY), organization_id="org_123",
    )
    assert config.providers["apifycloud"] == ProviderConfig(
        name="apifycloud", base_url="https://video.apifycloud.io", tracking=tracking,
        app_id="app_456", widget_key=Secret(WIDGET_KEY),
    )
    assert config.webhooks == (
        WebhookConfig(
            url="https://hooks.example.com/calls",
            secrets=(Secret(WEBHOOK_SECRET),),
            events=frozenset({"call.ended", "call.completed"}),
            retry_schedule=(5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0),
            timeout=15.0,
        ),
    )


def test_omitted_keys_take_documented_defaults(tmp_path: Path) -> None:
    """A config naming only one provider gets every documented default."""
    path = write(tmp_path, "[providers.apifycloud]\n")
    config = load(path, environ={})

    assert config.worker == WorkerConfig(
        database=tmp_path.resolve() / "callwatch.db", archive_dir=None, log_level="info"
    )
    assert config.tracking == TrackingConfig(
        poll_interval=10.0, pending_poll_interval=30.0, recording_poll_interval=5.0,
        recording_grace=900.0, not_found_grace=300.0, max_tracking_age=86400.0,
    )
    provider = config.providers["apifycloud"]
    assert provider.base_url == "https://video.apifycloud.io"
    assert provider.tracking == config.tracking
    assert (provider.api_key, provider.app_id, provider.widget_key) == (None, None, None)
    assert (provider.concurrency, provider.rate_limit) == (32, 50.0)
    assert config.webhooks == ()


def test_webhook_defaults(tmp_path: Path) -> None:
    """A webhook without events, retry_schedule or timeout gets every event, the default
    schedule and a 15 s timeout."""
    config = load(write(tmp_path, HOOK + BASE), environ=ENVIRON)

    (hook,) = config.webhooks
    assert hook.events is None
    assert hook.retry_schedule == (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
    assert hook.timeout == 15.0


@pytest.mark.parametrize(
    ("name", "url"),
    [
        ("ultravox", "https://api.ultravox.ai"),
        ("envoy", "https://tryenvoy.ai"),
        ("apifycloud", "https://video.apifycloud.io"),
    ],
)
def test_default_base_urls(tmp_path: Path, name: str, url: str) -> None:
    """Each provider defaults to its documented origin."""
    text = f"[providers.{name}]\napi_key_env = 'ULTRAVOX_API_KEY'\n"
    assert load(write(tmp_path, text), environ=ENVIRON).providers[name].base_url == url


def test_base_url_trailing_slash_dropped(tmp_path: Path) -> None:
    """``https://host/`` is the origin ``https://host``, so adapters can append paths."""
    text = BASE + 'base_url = "http://127.0.0.1:8080/"\n'
    config = load(write(tmp_path, text), environ=ENVIRON)
    assert config.providers["ultravox"].base_url == "http://127.0.0.1:8080"


def test_log_level_and_provider_limits(tmp_path: Path) -> None:
    """``log_level``, ``concurrency`` and ``rate_limit`` are read as given."""
    text = """
    [worker]
    log_level = "debug"
    [providers.apifycloud]
    concurrency = 4
    rate_limit = 2
    """
    config = load(write(tmp_path, text), environ={})
    assert config.worker.log_level == "debug"
    assert config.providers["apifycloud"].concurrency == 4
    assert config.providers["apifycloud"].rate_limit == 2.0
    assert isinstance(config.providers["apifycloud"].rate_limit, float)


# --------------------------------------------------------------------------- paths


def test_relative_paths_resolve_against_config_folder_not_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``database`` and ``archive_dir`` are relative to the config file's folder."""
    write(tmp_path / "etc", """
        [worker]
        database = "state/callwatch.db"
        archive_dir = "../recordings"
        [providers.apifycloud]
        """)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")

    config = load(Path("../etc/callwatch.toml"), environ={})

    etc = (tmp_path / "etc").resolve()
    assert config.source == etc / "callwatch.toml"
    assert config.worker.database == etc / "state" / "callwatch.db"
    assert config.worker.archive_dir is not None
    assert config.worker.archive_dir.resolve() == (tmp_path / "recordings").resolve()


def test_absolute_paths_kept(tmp_path: Path) -> None:
    """Absolute ``database`` and ``archive_dir`` are used as written."""
    text = """
    [worker]
    database = "/var/lib/callwatch/callwatch.db"
    archive_dir = "/srv/recordings"
    [providers.apifycloud]
    """
    config = load(write(tmp_path, text), environ={})
    assert config.worker.database == Path("/var/lib/callwatch/callwatch.db")
    assert config.worker.archive_dir == Path("/srv/recordings")


def test_problems_name_the_absolute_file_when_given_relatively(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A config given by a relative path is named by its absolute path in every problem."""
    path = write(tmp_path, "colour = 1\n" + BASE)
    monkeypatch.chdir(tmp_path)
    assert_one_problem(problems_of(Path("callwatch.toml")), path, "colour", "unknown key")


# --------------------------------------------------------------------------- tracking


def test_provider_override_changes_only_that_provider(tmp_path: Path) -> None:
    """``[providers.X] poll_interval`` overrides X only; the rest inherit ``[tracking]``."""
    text = """
    [tracking]
    poll_interval = 20
    recording_grace = 600
    [providers.ultravox]
    api_key_env = "ULTRAVOX_API_KEY"
    poll_interval = 3
    [providers.envoy]
    api_key_env = "ENVOY_API_KEY"
    """
    config = load(write(tmp_path, text), environ=ENVIRON)

    assert config.tracking.poll_interval == 20.0
    assert config.tracking.recording_grace == 600.0
    ultravox = config.providers["ultravox"].tracking
    assert ultravox.poll_interval == 3.0
    assert ultravox.recording_grace == 600.0
    assert ultravox.pending_poll_interval == 30.0
    assert config.providers["envoy"].tracking == config.tracking


@pytest.mark.parametrize("key", TRACKING_KEYS)
@pytest.mark.parametrize(("written", "expected"), [("7", 7.0), ("2.5", 2.5), ("1e3", 1000.0)])
def test_every_tracking_key_accepts_int_and_float(
    tmp_path: Path, key: str, written: str, expected: float
) -> None:
    """Durations are seconds, int or float, globally and per provider, stored as float."""
    text = f"""
    [tracking]
    {key} = {written}
    [providers.apifycloud]
    [providers.ultravox]
    api_key_env = "ULTRAVOX_API_KEY"
    {key} = {written}
    """
    config = load(write(tmp_path, text), environ=ENVIRON)
    for tracking in (config.tracking, config.providers["ultravox"].tracking,
                     config.providers["apifycloud"].tracking):
        value = getattr(tracking, key)
        assert value == expected
        assert isinstance(value, float)


# --------------------------------------------------------------------------- secrets


@dataclass(frozen=True)
class SecretCase:
    """Where one ``*_env`` / ``*_file`` pair lives and how to find what it resolved to."""

    header: str
    base: str
    prefix: str
    required: bool
    pick: Callable[[Config], Secret | None]

    def config_text(self, *lines: str) -> str:
        body = "\n".join([self.header, *lines])
        if self.prefix.startswith("webhooks"):
            return "[providers.apifycloud]\n" + body + "\n"
        return body + "\n"


def _first_hook_secret(config: Config) -> Secret | None:
    return config.webhooks[0].secrets[0] if config.webhooks else None


SECRET_CASES = {
    "ultravox.api_key": SecretCase(
        "[providers.ultravox]", "api_key", "providers.ultravox", True,
        lambda c: c.providers["ultravox"].api_key),
    "envoy.api_key": SecretCase(
        "[providers.envoy]", "api_key", "providers.envoy", True,
        lambda c: c.providers["envoy"].api_key),
    "apifycloud.api_key": SecretCase(
        "[providers.apifycloud]", "api_key", "providers.apifycloud", False,
        lambda c: c.providers["apifycloud"].api_key),
    "apifycloud.widget_key": SecretCase(
        "[providers.apifycloud]", "widget_key", "providers.apifycloud", False,
        lambda c: c.providers["apifycloud"].widget_key),
    "webhooks.secret": SecretCase(
        '[[webhooks]]\nurl = "https://hooks.example.com/calls"', "secret", "webhooks[0]", True,
        _first_hook_secret),
}
secret_cases = pytest.mark.parametrize(
    "case", list(SECRET_CASES.values()), ids=list(SECRET_CASES)
)


@secret_cases
def test_secret_from_env(tmp_path: Path, case: SecretCase) -> None:
    """``*_env`` names an environment variable; its value (stripped) is the secret."""
    path = write(tmp_path, case.config_text(f'{case.base}_env = "THE_SECRET"'))
    config = load(path, environ={"THE_SECRET": f" {WEBHOOK_SECRET}\n"})
    assert case.pick(config) == Secret(WEBHOOK_SECRET)


@secret_cases
def test_secret_from_file_next_to_config(tmp_path: Path, case: SecretCase) -> None:
    """A relative ``*_file`` is read next to the config file, trailing newline stripped."""
    (tmp_path / "the.key").write_text(WEBHOOK_SECRET + "\n", encoding="utf-8")
    path = write(tmp_path, case.config_text(f'{case.base}_file = "the.key"'))
    assert case.pick(load(path, environ={})) == Secret(WEBHOOK_SECRET)


@secret_cases
def test_secret_file_looked_up_in_credentials_directory_first(
    tmp_path: Path, case: SecretCase
) -> None:
    """``$CREDENTIALS_DIRECTORY`` (systemd LoadCredential=) wins over the config's folder."""
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "the.key").write_text(WEBHOOK_SECRET, encoding="utf-8")
    (tmp_path / "the.key").write_text(OTHER_WEBHOOK_SECRET, encoding="utf-8")
    path = write(tmp_path, case.config_text(f'{case.base}_file = "the.key"'))

    config = load(path, environ={"CREDENTIALS_DIRECTORY": str(credentials)})
    assert case.pick(config) == Secret(WEBHOOK_SECRET)


@secret_cases
def test_secret_file_falls_back_to_config_folder(tmp_path: Path, case: SecretCase) -> None:
    """A file missing from ``$CREDENTIALS_DIRECTORY`` is then looked for next to the config."""
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (tmp_path / "the.key").write_text(WEBHOOK_SECRET, encoding="utf-8")
    path = write(tmp_path, case.config_text(f'{case.base}_file = "the.key"'))

    config = load(path, environ={"CREDENTIALS_DIRECTORY": str(credentials)})
    assert case.pick(config) == Secret(WEBHOOK_SECRET)


@secret_cases
def test_secret_file_absolute_path_used_as_is(tmp_path: Path, case: SecretCase) -> None:
    """An absolute ``*_file`` is read from there, whatever ``$CREDENTIALS_DIRECTORY`` says."""
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    secret_file = tmp_path / "vault" / "the.key"
    secret_file.parent.mkdir()
    secret_file.write_text(WEBHOOK_SECRET, encoding="utf-8")
    (credentials / "the.key").write_text(OTHER_WEBHOOK_SECRET, encoding="utf-8")
    path = write(tmp_path, case.config_text(f'{case.base}_file = "{secret_file}"'))

    config = load(path, environ={"CREDENTIALS_DIRECTORY": str(credentials)})
    assert case.pick(config) == Secret(WEBHOOK_SECRET)


@secret_cases
def test_secret_env_and_file_together_is_an_error(tmp_path: Path, case: SecretCase) -> None:
    """Giving both ``*_env`` and ``*_file`` is one problem naming both keys."""
    (tmp_path / "the.key").write_text(WEBHOOK_SECRET, encoding="utf-8")
    path = write(tmp_path, case.config_text(
        f'{case.base}_env = "THE_SECRET"', f'{case.base}_file = "the.key"'))

    problems = problems_of(path, {"THE_SECRET": WEBHOOK_SECRET})
    assert_one_problem(problems, path, f"{case.prefix}.{case.base}_env", f"{case.base}_file")


@secret_cases
def test_secret_env_unset_names_key_and_variable(tmp_path: Path, case: SecretCase) -> None:
    """An unset variable is one problem naming the ``*_env`` key and the variable."""
    path = write(tmp_path, case.config_text(f'{case.base}_env = "NOT_SET_ANYWHERE"'))
    assert_one_problem(problems_of(path, {}), path, f"{case.prefix}.{case.base}_env",
                       "environment variable NOT_SET_ANYWHERE is not set")


@secret_cases
@pytest.mark.parametrize("value", ["", "   ", "\n"], ids=["empty", "spaces", "newline"])
def test_secret_env_empty_is_an_error(tmp_path: Path, case: SecretCase, value: str) -> None:
    """A variable that is set but empty (or only whitespace) is a problem, not a missing key."""
    path = write(tmp_path, case.config_text(f'{case.base}_env = "BLANK"'))
    assert_one_problem(problems_of(path, {"BLANK": value}), path,
                       f"{case.prefix}.{case.base}_env", "environment variable BLANK is empty")


@secret_cases
def test_secret_file_missing_names_every_place_looked(tmp_path: Path, case: SecretCase) -> None:
    """A missing ``*_file`` is one problem listing the credentials dir and the config folder."""
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    path = write(tmp_path, case.config_text(f'{case.base}_file = "nope.key"'))

    problems = problems_of(path, {"CREDENTIALS_DIRECTORY": str(credentials)})
    assert_one_problem(problems, path, f"{case.prefix}.{case.base}_file", "file not found")
    assert str(credentials / "nope.key") in problems[0]
    assert str(tmp_path.resolve() / "nope.key") in problems[0]


@secret_cases
@pytest.mark.parametrize(
    ("content", "fragment"), [(b"", "is empty"), (b" \n\n", "is empty"),
                              (b"\xff\xfe\x00bad", "is not UTF-8 text")],
    ids=["empty", "blank", "not-utf8"],
)
def test_secret_file_unusable_contents(
    tmp_path: Path, case: SecretCase, content: bytes, fragment: str
) -> None:
    """An empty or non-UTF-8 secret file is one problem naming the ``*_file`` key."""
    (tmp_path / "the.key").write_bytes(content)
    path = write(tmp_path, case.config_text(f'{case.base}_file = "the.key"'))
    assert_one_problem(problems_of(path, {}), path, f"{case.prefix}.{case.base}_file", fragment)


@secret_cases
def test_secret_file_that_is_a_directory(tmp_path: Path, case: SecretCase) -> None:
    """A ``*_file`` naming a directory is one readable problem, not a crash."""
    (tmp_path / "the.key").mkdir()
    path = write(tmp_path, case.config_text(f'{case.base}_file = "the.key"'))
    assert_one_problem(problems_of(path, {}), path, f"{case.prefix}.{case.base}_file",
                       "cannot read")


@secret_cases
@pytest.mark.parametrize(("written", "fragment"), [
    ("5", "must be a string, got 5"),
    ('""', "must not be empty"),
    ("['A']", "must be a string"),
], ids=["int", "empty", "list"])
def test_secret_key_wrong_value_is_one_problem(
    tmp_path: Path, case: SecretCase, written: str, fragment: str
) -> None:
    """A ``*_env`` that is not a usable name is one problem (not also 'missing')."""
    path = write(tmp_path, case.config_text(f"{case.base}_env = {written}"))
    assert_one_problem(problems_of(path, {}), path, f"{case.prefix}.{case.base}_env", fragment)


@secret_cases
def test_secret_missing_only_when_required(tmp_path: Path, case: SecretCase) -> None:
    """Ultravox and Envoy keys and webhook secrets are required; apifycloud's are optional."""
    path = write(tmp_path, case.config_text())
    if not case.required:
        assert case.pick(load(path, environ={})) is None
        return
    assert_one_problem(problems_of(path, {}), path, f"{case.prefix}.{case.base}_env",
                       f"missing: set {case.base}_env or {case.base}_file")


# --------------------------------------------------------------------------- webhook secrets


def test_rotation_accepts_several_space_separated_secrets(tmp_path: Path) -> None:
    """During a rotation the secret holds several ``whsec_`` secrets, kept in order."""
    path = write(tmp_path, HOOK + BASE)
    environ = {**ENVIRON, "CALLWATCH_WEBHOOK_SECRET": f"{WEBHOOK_SECRET} {OTHER_WEBHOOK_SECRET}"}
    (hook,) = load(path, environ=environ).webhooks
    assert hook.secrets == (Secret(WEBHOOK_SECRET), Secret(OTHER_WEBHOOK_SECRET))


def test_rotation_from_a_file_with_one_secret_per_line(tmp_path: Path) -> None:
    """A secret file may hold the rotated secrets on separate lines."""
    (tmp_path / "hook.key").write_text(f"{OTHER_WEBHOOK_SECRET}\n{WEBHOOK_SECRET}\n",
                                       encoding="utf-8")
    text = '[[webhooks]]\nurl = "https://h.example.com/"\nsecret_file = "hook.key"\n' + BASE
    (hook,) = load(write(tmp_path, text), environ=ENVIRON).webhooks
    assert hook.secrets == (Secret(OTHER_WEBHOOK_SECRET), Secret(WEBHOOK_SECRET))


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("whsec_!!not-base64-at-all!!", "base64"),
        ("whsec_" + base64.b64encode(b"too short").decode(), "too short"),
        ("whsec_", "too short"),
        (f"{WEBHOOK_SECRET} whsec_%%%%", "base64"),
    ],
    ids=["not-base64", "short", "bare-prefix", "one-bad-in-rotation"],
)
def test_bad_webhook_secret_is_named_but_never_shown(
    tmp_path: Path, value: str, fragment: str
) -> None:
    """A secret that is not ``whsec_`` + base64 of 16+ bytes is a problem that hides it."""
    path = write(tmp_path, HOOK + BASE)
    problems = problems_of(path, {**ENVIRON, "CALLWATCH_WEBHOOK_SECRET": value})
    assert_one_problem(problems, path, "webhooks[0].secret_env", fragment)
    for body in (part.removeprefix("whsec_") for part in value.split()):
        assert not body or body not in problems[0]


# --------------------------------------------------------------------------- mistakes


def test_five_mistakes_give_five_problems(tmp_path: Path) -> None:
    """Every mistake is collected, each naming the file and its dotted key."""
    path = write(tmp_path, """
        [worker]
        databse = "typo.db"
        [tracking]
        poll_interval = "10"
        [providers.ultravox]
        api_key_env = "UNSET_VARIABLE"
        [providers.envoy]
        api_key_env = "ENVOY_API_KEY"
        base_url = "ftp://tryenvoy.ai"
        [[webhooks]]
        url = "https://hooks.example.com/calls"
        secret_env = "CALLWATCH_WEBHOOK_SECRET"
        timeout = -1
        """)
    problems = problems_of(path)
    keys = {
        "worker.databse", "tracking.poll_interval", "providers.ultravox.api_key_env",
        "providers.envoy.base_url", "webhooks[0].timeout",
    }
    assert len(problems) == 5, problems
    assert {p.split(": ")[1] for p in problems} == keys
    assert all(p.startswith(f"{path}: ") for p in problems)


UNKNOWN_KEYS = [
    ('colour = "blue"', "colour"),
    ('[worker]\ndatabse = "x.db"', "worker.databse"),
    ("[tracking]\npoll_intervall = 5", "tracking.poll_intervall"),
    ('[providers.apifycloud]\napi_token_env = "X"', "providers.apifycloud.api_token_env"),
    ('[providers.apifycloud]\norganization_id = "org_1"',
     "providers.apifycloud.organization_id"),
    ('[providers.envoy]\napi_key_env = "ENVOY_API_KEY"\napp_id = "a"', "providers.envoy.app_id"),
    ('[providers.envoy]\napi_key_env = "ENVOY_API_KEY"\nwidget_key_env = "W"',
     "providers.envoy.widget_key_env"),
    (HOOK + 'secrt = "x"', "webhooks[0].secrt"),
    (HOOK + "headers = { a = 'b' }", "webhooks[0].headers"),
]


@pytest.mark.parametrize(("snippet", "key"), UNKNOWN_KEYS, ids=[k for _, k in UNKNOWN_KEYS])
def test_unknown_keys_are_named(tmp_path: Path, snippet: str, key: str) -> None:
    """An unknown key, at any level, is one problem naming its dotted key and the file."""
    path = write(tmp_path, snippet + "\n" + BASE)
    assert_one_problem(problems_of(path), path, key, "unknown key")


WRONG_VALUES = [
    # durations
    ('[tracking]\npoll_interval = "10"', "tracking.poll_interval", "must be a number, got '10'"),
    ("[tracking]\npoll_interval = true", "tracking.poll_interval", "must be a number, got True"),
    ("[tracking]\nrecording_grace = -1", "tracking.recording_grace", "positive number of seconds"),
    ("[tracking]\nnot_found_grace = 0", "tracking.not_found_grace", "positive number of seconds"),
    ("[tracking]\nmax_tracking_age = nan", "tracking.max_tracking_age", "positive number"),
    ("[tracking]\npending_poll_interval = inf", "tracking.pending_poll_interval",
     "positive number"),
    ("[tracking]\nrecording_poll_interval = -inf", "tracking.recording_poll_interval",
     "positive number"),
    ("[tracking]\npoll_interval = 1" + "0" * 400, "tracking.poll_interval", "too large"),
    ("[tracking]\npoll_interval = [10]", "tracking.poll_interval", "must be a number"),
    # per-provider numbers
    ("[providers.apifycloud]\npoll_interval = -5", "providers.apifycloud.poll_interval",
     "positive number"),
    ("[providers.apifycloud]\nconcurrency = true", "providers.apifycloud.concurrency",
     "must be an integer, got True"),
    ("[providers.apifycloud]\nconcurrency = 1.5", "providers.apifycloud.concurrency",
     "must be an integer, got 1.5"),
    ('[providers.apifycloud]\nconcurrency = "8"', "providers.apifycloud.concurrency",
     "must be an integer"),
    ("[providers.apifycloud]\nconcurrency = 0", "providers.apifycloud.concurrency", "1 to 10000"),
    ("[providers.apifycloud]\nrate_limit = 0", "providers.apifycloud.rate_limit",
     "positive number"),
    ('[providers.apifycloud]\nrate_limit = "fast"', "providers.apifycloud.rate_limit",
     "must be a number"),
    # worker
    ("worker = 1", "worker", "must be a table, got 1"),
    ("[worker]\ndatabase = 1", "worker.database", "must be a string, got 1"),
    ('[worker]\ndatabase = ""', "worker.database", "must not be empty"),
    ("[worker]\narchive_dir = false", "worker.archive_dir", "must be a string"),
    ('[worker]\nlog_level = "loud"', "worker.log_level", "debug, info, warning, error"),
    ("tracking = 5", "tracking", "must be a table"),
    # providers
    ("[providers.zoom]", "providers.zoom", "unknown provider (known: ultravox, envoy, apifycloud)"),
    ("[providers.Ultravox]", "providers.Ultravox", "unknown provider"),
    ("[providers]\napifycloud = 1", "providers.apifycloud", "must be a table"),
    ('[providers.apifycloud]\nbase_url = "ftp://video.apifycloud.io"',
     "providers.apifycloud.base_url", "must be an http(s) URL"),
    ('[providers.apifycloud]\nbase_url = "video.apifycloud.io"',
     "providers.apifycloud.base_url", "must be an http(s) URL"),
    ('[providers.apifycloud]\nbase_url = "https://video.apifycloud.io/api"',
     "providers.apifycloud.base_url", "origin only"),
    ('[providers.apifycloud]\nbase_url = "https://video.apifycloud.io?x=1"',
     "providers.apifycloud.base_url", "origin only"),
    ('[providers.apifycloud]\nbase_url = "http://[::1"', "providers.apifycloud.base_url",
     "must be an http(s) URL"),
    ('[providers.apifycloud]\nbase_url = "http://localhost:99999"',
     "providers.apifycloud.base_url", "must be an http(s) URL"),
    ('[providers.apifycloud]\nbase_url = "http://local host"', "providers.apifycloud.base_url",
     "spaces"),
    ("[providers.apifycloud]\nbase_url = 443", "providers.apifycloud.base_url",
     "must be a string"),
    # webhooks
    ('[[webhooks]]\nurl = "ftp://hooks.example.com"\nsecret_env = "CALLWATCH_WEBHOOK_SECRET"',
     "webhooks[0].url", "must be an http(s) URL, got 'ftp://hooks.example.com'"),
    ('[[webhooks]]\nurl = "hooks.example.com/calls"\nsecret_env = "CALLWATCH_WEBHOOK_SECRET"',
     "webhooks[0].url", "must be an http(s) URL"),
    ('[[webhooks]]\nurl = "https://"\nsecret_env = "CALLWATCH_WEBHOOK_SECRET"',
     "webhooks[0].url", "must be an http(s) URL"),
    ('[[webhooks]]\nsecret_env = "CALLWATCH_WEBHOOK_SECRET"', "webhooks[0].url", "missing"),
    (HOOK + "timeout = 0", "webhooks[0].timeout", "positive number"),
    (HOOK + 'timeout = "15"', "webhooks[0].timeout", "must be a number"),
    (HOOK + 'retry_schedule = "5"', "webhooks[0].retry_schedule", "must be a list"),
    (HOOK + "retry_schedule = [5, -1]", "webhooks[0].retry_schedule", "non-negative seconds"),
    (HOOK + "retry_schedule = [5, nan]", "webhooks[0].retry_schedule", "non-negative seconds"),
    (HOOK + "retry_schedule = [inf]", "webhooks[0].retry_schedule", "non-negative seconds"),
    (HOOK + "retry_schedule = [true]", "webhooks[0].retry_schedule", "non-negative seconds"),
    (HOOK + 'retry_schedule = ["5"]', "webhooks[0].retry_schedule", "non-negative seconds"),
    (HOOK + "retry_schedule = [1" + "0" * 400 + "]", "webhooks[0].retry_schedule",
     "non-negative seconds"),
    (HOOK + 'events = "call.ended"', "webhooks[0].events", "must be a list"),
    (HOOK + 'events = ["call.ended", "call.exploded"]', "webhooks[0].events",
     "unknown event type(s): call.exploded"),
    (HOOK + "events = [1]", "webhooks[0].events", "unknown event type(s): 1"),
    (HOOK + 'events = [["call.ended"]]', "webhooks[0].events", "unknown event type(s)"),
    ("webhooks = 1", "webhooks", "must be an array of tables"),
    ('[webhooks]\nurl = "https://h.example.com"', "webhooks", "must be an array of tables"),
    ("webhooks = [1]", "webhooks[0]", "must be a table"),
]


@pytest.mark.parametrize(("snippet", "key", "fragment"), WRONG_VALUES,
                         ids=[f"{key}-{n}" for n, (_, key, _) in enumerate(WRONG_VALUES)])
def test_wrong_value_is_one_problem(tmp_path: Path, snippet: str, key: str, fragment: str) -> None:
    """A wrong type or out-of-range value is one problem naming the file and the key."""
    path = write(tmp_path, snippet + "\n" + BASE)
    assert_one_problem(problems_of(path), path, key, fragment)


def test_no_provider_is_a_problem(tmp_path: Path) -> None:
    """A config without any ``[providers.NAME]`` says how to add one."""
    path = write(tmp_path, "[worker]\n")
    assert_one_problem(problems_of(path), path, "providers", "no provider configured")


def test_second_webhook_is_named_by_its_index(tmp_path: Path) -> None:
    """Problems in the n-th ``[[webhooks]]`` name ``webhooks[n-1]``."""
    path = write(tmp_path, HOOK + HOOK + "timeout = -2\n" + BASE)
    assert_one_problem(problems_of(path), path, "webhooks[1].timeout", "positive")


def test_events_filter_keeps_only_named_types(tmp_path: Path) -> None:
    """``events`` lists the event types to send; every documented type is accepted."""
    events = ", ".join(f'"{e}"' for e in EVENT_TYPES)
    config = load(write(tmp_path, HOOK + f"events = [{events}]\n" + BASE), environ=ENVIRON)
    assert config.webhooks[0].events == frozenset(EVENT_TYPES)


# --------------------------------------------------------------------------- unreadable files


def test_invalid_toml_is_one_problem(tmp_path: Path) -> None:
    """Broken TOML is one problem naming the file and the line."""
    path = write(tmp_path, "[worker\ndatabase = 1\n")
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}: invalid TOML: ")
    assert "line 1" in problem


def test_duplicate_table_is_invalid_toml(tmp_path: Path) -> None:
    """A table given twice is reported by the TOML parser as one problem."""
    path = write(tmp_path, BASE + BASE)
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}: invalid TOML: ")


def test_non_utf8_file_is_one_problem(tmp_path: Path) -> None:
    """A file that is not UTF-8 text is one problem, not a traceback."""
    path = tmp_path / "callwatch.toml"
    path.write_bytes(b'[worker]\ndatabase = "caf\xe9.db"\n')
    assert problems_of(path) == [f"{path.resolve()}: not UTF-8 text"]


def test_missing_file_is_one_problem(tmp_path: Path) -> None:
    """A config path that does not exist is one problem naming it."""
    path = tmp_path / "absent.toml"
    assert problems_of(path) == [f"{path.resolve()}: file not found"]


def test_problem_with_a_newline_stays_on_one_line(tmp_path: Path) -> None:
    """A quoted key holding a newline is escaped, so each problem is one line."""
    path = write(tmp_path, '"two\\nlines" = 1\n' + BASE)
    assert_one_problem(problems_of(path), path, "two\\nlines", "unknown key")


def test_directory_as_config_is_one_problem(tmp_path: Path) -> None:
    """A config path that is a directory is one readable problem."""
    (problem,) = problems_of(tmp_path)
    assert problem.startswith(f"{tmp_path.resolve()}: cannot read: ")


# --------------------------------------------------------------------------- config_path


def test_config_path_flag_wins() -> None:
    """``--config`` wins over ``$CALLWATCH_CONFIG``."""
    assert config_path("/a/cw.toml", {"CALLWATCH_CONFIG": "/b/cw.toml"}) == Path("/a/cw.toml")


def test_config_path_from_environment() -> None:
    """Without ``--config``, ``$CALLWATCH_CONFIG`` is used."""
    assert config_path(None, {"CALLWATCH_CONFIG": "/b/cw.toml"}) == Path("/b/cw.toml")


@pytest.mark.parametrize("environ", [{}, {"CALLWATCH_CONFIG": ""}])
def test_config_path_default(environ: dict[str, str]) -> None:
    """With neither, the path is ``/etc/callwatch/callwatch.toml``."""
    assert config_path(None, environ) == Path("/etc/callwatch/callwatch.toml")


# --------------------------------------------------------------------------- secrecy


def test_repr_never_shows_secrets(tmp_path: Path) -> None:
    """``repr`` and ``str`` of a loaded config mask every secret."""
    path = write(tmp_path, CONTRACT_EXAMPLE)
    environ = {**ENVIRON, "CALLWATCH_WEBHOOK_SECRET": f"{WEBHOOK_SECRET} {OTHER_WEBHOOK_SECRET}"}
    config = load(path, environ=environ)
    for text in (repr(config), str(config), repr(config.providers), repr(config.webhooks)):
        for secret in SECRETS:
            assert secret not in text
            assert secret.removeprefix("whsec_") not in text
    assert "Secret('**********')" in repr(config)


def test_problems_never_show_secrets(tmp_path: Path) -> None:
    """No problem message shows a secret, even one pasted where its variable name belongs."""
    (tmp_path / "short.key").write_text(
        "whsec_" + base64.b64encode(b"tiny-secret").decode(), encoding="utf-8")
    path = write(tmp_path, f"""
        [providers.ultravox]
        api_key_env = "{ULTRAVOX_KEY}"
        [providers.envoy]
        api_key_file = "{WEBHOOK_SECRET}"
        [[webhooks]]
        url = "https://a.example.com"
        secret_env = "{OTHER_WEBHOOK_SECRET}"
        [[webhooks]]
        url = "https://b.example.com"
        secret_env = "BAD_SECRET"
        [[webhooks]]
        url = "https://c.example.com"
        secret_file = "short.key"
        """)
    unusable = "whsec_!!this-is-secret!!"
    with pytest.raises(ConfigError) as info:
        load(path, environ={**ENVIRON, "BAD_SECRET": unusable})
    problems = info.value.problems
    assert len(problems) == 5, problems
    shown = "\n".join([*problems, str(info.value)])
    for secret in (*SECRETS, unusable, "tiny-secret",
                   base64.b64encode(b"tiny-secret").decode()):
        assert secret not in shown
        assert secret.removeprefix("whsec_") not in shown


# --------------------------------------------------------------------------- hypothesis

_NAMES = ("ULTRAVOX_API_KEY", "CALLWATCH_WEBHOOK_SECRET", "BLANK", "BAD", "UNSET")
_STRINGS = (
    "", " ", "/", "..", "~", "~no-such-user-callwatch/x", "a\x00b", "callwatch.db",
    "https://api.ultravox.ai", "http://127.0.0.1:9", "http://[::1", "ftp://x", "https://",
    "https://x.io/p?q#f", "whsec_", "whsec_AAAA", "call.ended", "debug", *_NAMES, *EVENT_TYPES,
)
_scalars = st.one_of(
    st.text(max_size=12), st.sampled_from(_STRINGS), st.integers(),
    st.sampled_from([0, -1, 10**400, -(10**400)]), st.floats(), st.booleans(),
    st.datetimes(), st.datetimes(timezones=st.just(UTC)), st.dates(), st.times(),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                  max_size=4),
    max_leaves=8,
)


def _table(keys: tuple[str, ...]) -> st.SearchStrategy[Any]:
    return st.dictionaries(st.sampled_from(keys) | st.text(max_size=6), _values, max_size=6)


_documents = st.fixed_dictionaries(
    {},
    optional={
        "worker": _table(WORKER_KEYS) | _values,
        "tracking": _table(TRACKING_KEYS) | _values,
        "providers": st.dictionaries(
            st.sampled_from(("ultravox", "envoy", "apifycloud")) | st.text(max_size=6),
            _table(PROVIDER_KEYS) | _values, max_size=4) | _values,
        "webhooks": st.lists(_table(WEBHOOK_KEYS) | _values, max_size=3) | _values,
        "colour": _values,
    },
)


@settings(max_examples=400, deadline=None)
@given(document=_documents)
def test_parse_never_raises_anything_but_config_error(document: dict[str, Any]) -> None:
    """Any TOML-shaped document yields a Config or a ConfigError, never another exception."""
    path = Path("/nonexistent-callwatch-test/callwatch.toml")
    environ = {"ULTRAVOX_API_KEY": ULTRAVOX_KEY, "CALLWATCH_WEBHOOK_SECRET": WEBHOOK_SECRET,
               "BLANK": "  ", "BAD": "whsec_!!" + ENVOY_KEY}
    result: Config | ConfigError
    try:
        result = parse(document, path, environ)
    except ConfigError as exc:
        result = exc
    if isinstance(result, ConfigError):
        assert result.problems
        for problem in result.problems:
            assert problem.startswith(f"{path}: ")
            assert problem.isprintable(), problem
            assert not any(s in problem for s in SECRETS)
    else:
        assert result.providers
        assert not any(s in repr(result) for s in SECRETS)


# --------------------------------------------------------------------------- example and docs


def test_example_config_loads() -> None:
    """``config/callwatch.example.toml`` is valid once its variables are set."""
    config = load(EXAMPLE, environ=ENVIRON)
    assert set(config.providers) == {"ultravox", "envoy", "apifycloud"}
    assert config.providers["ultravox"].api_key == Secret(ULTRAVOX_KEY)
    assert config.providers["envoy"].api_key == Secret(ENVOY_KEY)
    assert config.webhooks[0].secrets == (Secret(WEBHOOK_SECRET),)
    assert config.worker.archive_dir is not None


def test_example_config_values_are_the_defaults() -> None:
    """The values the example sets are the defaults its comments state, so they cannot drift."""
    config = load(EXAMPLE, environ=ENVIRON)
    assert config.worker.log_level == "info"
    assert config.tracking == TrackingConfig()
    for name, provider in config.providers.items():
        assert provider.base_url == DEFAULT_BASE_URLS[name]
        assert (provider.concurrency, provider.rate_limit) == (32, 50.0)
        assert provider.tracking == TrackingConfig()
    (hook,) = config.webhooks
    assert (hook.events, hook.timeout) == (None, 15.0)
    assert hook.retry_schedule == (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)


ALL_KEYS = sorted({*WORKER_KEYS, *PROVIDER_KEYS, *WEBHOOK_KEYS})


@pytest.mark.parametrize("key", ALL_KEYS)
def test_example_config_shows_every_key(key: str) -> None:
    """Every key appears in the example, set or commented out, so operators can find it."""
    text = EXAMPLE.read_text(encoding="utf-8")
    assert re.search(rf"^\s*#?\s*{re.escape(key)}\s*=", text, re.MULTILINE), key


@pytest.mark.parametrize("word", [*ALL_KEYS, *EVENT_TYPES, "CREDENTIALS_DIRECTORY",
                                  "CALLWATCH_CONFIG", "check-config"])
def test_docs_describe_every_key(word: str) -> None:
    """``docs/configuration.md`` names every key, event type and lookup rule."""
    assert f"`{word}`" in DOCS.read_text(encoding="utf-8")


def test_commands_without_providers_need_no_secrets(tmp_path: Path) -> None:
    """With resolve_secrets=False a config whose secret env vars are unset still loads."""
    path = tmp_path / "callwatch.toml"
    path.write_text('[providers.ultravox]\napi_key_env = "NOT_SET_ANYWHERE"\n'
                    '[[webhooks]]\nurl = "https://h.example/x"\nsecret_env = "ALSO_UNSET"\n')
    config = load(path, environ={}, resolve_secrets=False)
    assert config.providers["ultravox"].api_key is None
    with pytest.raises(ConfigError, match="NOT_SET_ANYWHERE"):
        load(path, environ={})
    bad = tmp_path / "bad.toml"
    bad.write_text('[providers.ultravox]\napi_key_env = "whsec_pasted"\n')
    with pytest.raises(ConfigError, match="api_key_env"):
        load(bad, environ={}, resolve_secrets=False)


@pytest.mark.parametrize(("written", "fragment"), [
    ("0", "must be 1 to 10000"), ("10001", "must be 1 to 10000"), ("2.5", "must be an integer"),
    ("true", "must be an integer"), ('"100"', "must be an integer"),
])
def test_max_recordings_per_call_must_be_a_sane_count(
    tmp_path: Path, written: str, fragment: str
) -> None:
    """max_recordings_per_call is a count from 1 to 10000; anything else names the key."""
    path = write(tmp_path, f"[tracking]\nmax_recordings_per_call = {written}\n" + BASE)
    assert_one_problem(problems_of(path), path, "tracking.max_recordings_per_call", fragment)


def test_max_recordings_per_call_per_provider(tmp_path: Path) -> None:
    """Set under [tracking] it applies to all; under [providers.X] to that provider only."""
    text = """
    [tracking]
    max_recordings_per_call = 7
    [providers.apifycloud]
    max_recordings_per_call = 3
    [providers.ultravox]
    api_key_env = "ULTRAVOX_API_KEY"
    """
    config = load(write(tmp_path, text), environ=ENVIRON)
    assert config.tracking.max_recordings_per_call == 7
    assert config.providers["ultravox"].tracking.max_recordings_per_call == 7
    assert config.providers["apifycloud"].tracking.max_recordings_per_call == 3

# --------------------------------------------------------------------------- [call_webhooks]


def test_call_webhooks_defaults_refuse_private_and_have_no_secret(tmp_path: Path) -> None:
    """Without [call_webhooks]: no own secret, any public host, no private address, 16 at once."""
    config = load(write(tmp_path, BASE + HOOK), environ=ENVIRON)
    policy = config.call_webhooks
    assert (policy.secret, policy.allow_hosts, policy.allow_private, policy.max_in_flight) == (
        None, (), False, 16)


def test_call_webhooks_parse_secret_hosts_and_flags(tmp_path: Path) -> None:
    """Every [call_webhooks] key is read; the secret is resolved and never shown."""
    text = BASE + HOOK + """
[call_webhooks]
secret_env = "CALL_SECRET"
allow_hosts = ["hooks.example.com", "*.example.org"]
allow_private = true
max_in_flight = 4
"""
    config = load(write(tmp_path, text), environ={**ENVIRON, "CALL_SECRET": OTHER_WEBHOOK_SECRET})
    policy = config.call_webhooks
    assert policy.secret == Secret(OTHER_WEBHOOK_SECRET)
    assert policy.allow_hosts == ("hooks.example.com", "*.example.org")
    assert (policy.allow_private, policy.max_in_flight) == (True, 4)
    assert OTHER_WEBHOOK_SECRET not in repr(config)


@pytest.mark.parametrize(("line", "key", "fragment"), [
    ('allow_hosts = ["http://x.example"]', "allow_hosts", "not a host name"),
    ("allow_hosts = [3]", "allow_hosts", "not a string"),
    ('allow_private = "yes"', "allow_private", "must be"),
    ("max_in_flight = 0", "max_in_flight", "1 to 1000"),
    ('secret_env = "SHORT"', "secret_env", "too short"),
    ("color = 1", "color", "unknown key"),
])
def test_call_webhooks_mistakes_are_named(tmp_path: Path, line: str, key: str,
                                          fragment: str) -> None:
    """Each mistake in [call_webhooks] is one problem naming its key."""
    path = write(tmp_path, BASE + HOOK + "\n[call_webhooks]\n" + line + "\n")
    problems = problems_of(path, {**ENVIRON, "SHORT": "whsec_c2hvcnQ="})
    assert_one_problem(problems, path, f"call_webhooks.{key}", fragment)
