"""One error tree: every error class of ours is a CallwatchError, and one place maps errors
to exit codes (2 bad usage or input, 1 anything else)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest
from hypothesis import given
from hypothesis import strategies as st

import worker
from worker.cli import error_lines, exit_code
from worker.config import ConfigError
from worker.errors import CallwatchError, UsageError

# The simulator is a test and demo tool with its own errors; __main__ runs the CLI on import.
SKIP = ("worker.simulator", "worker.__main__")


def _our_exception_classes() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(worker.__path__, "worker."):
        if info.name.startswith(SKIP):
            continue
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, BaseException) and cls.__module__ == module.__name__:
                found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return [found[name] for name in sorted(found)]


CLASSES = _our_exception_classes()


def test_the_walk_finds_the_known_errors() -> None:
    """The module walk sees errors in nested packages, so the tree test below is not vacuous."""
    names = {cls.__qualname__ for cls in CLASSES}
    assert {"CallwatchError", "ConfigError", "StoreError", "TargetError", "DownloadError",
            "TrackInputError", "BadInputError", "ListenError", "HttpError"} <= names


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: f"{cls.__module__}.{cls.__qualname__}")
def test_every_error_of_ours_is_a_callwatch_error(cls: type[BaseException]) -> None:
    """Each exception class defined in worker/ derives from worker.errors.CallwatchError."""
    assert issubclass(cls, CallwatchError)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: f"{cls.__module__}.{cls.__qualname__}")
def test_exit_code_follows_the_tree(cls: type[BaseException]) -> None:
    """A UsageError (any subclass) exits 2; every other error of ours exits 1."""
    error = cls.__new__(cls)  # exit_code looks at the class only; constructors differ
    assert exit_code(error) == (2 if issubclass(cls, UsageError) else 1)


def test_usage_errors_of_the_areas() -> None:
    """Bad config, bad track input and bad command options are all usage errors (exit 2)."""
    from worker.cli.backfill import BadInputError as BadBackfillInput
    from worker.cli.deliveries import BadInputError as BadDeliveriesInput
    from worker.track_input import TrackInputError

    for cls in (ConfigError, TrackInputError, BadBackfillInput, BadDeliveriesInput):
        assert issubclass(cls, UsageError)


def test_other_exceptions_exit_1_and_ctrl_c_130() -> None:
    """Not ours (a bug) exits 1, named by its type; Ctrl-C exits 130."""
    assert exit_code(RuntimeError("x")) == 1
    assert exit_code(KeyboardInterrupt()) == 130
    assert error_lines(RuntimeError("boom")) == ["callwatch: error: RuntimeError: boom"]


@given(st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), max_size=80))
def test_our_errors_show_their_message_alone(message: str) -> None:
    """An error of ours is shown as its message on one line, without a type name."""
    assert error_lines(CallwatchError(message)) == [f"callwatch: error: {message}"]
    assert error_lines(UsageError(message)) == [f"callwatch: error: {message}"]


@given(st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=5))
def test_config_errors_show_every_problem(problems: list[str]) -> None:
    """A config error shows each problem on a line of its own, as check-config promises."""
    assert error_lines(ConfigError(problems)) == problems
