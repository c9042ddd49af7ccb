"""Command line: argument parsing and exit codes only; the work happens elsewhere.

Exit codes (CONTRACT.md): 0 success, 2 bad usage or bad input, 1 any other failure. Errors
are one readable line on stderr; ``--debug`` shows the traceback as well.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import anyio

from worker.config import Config, ConfigError, config_path, load
from worker.errors import CallwatchError


class UsageError(Exception):
    """Bad usage or bad input: exit 2."""


class CommandError(Exception):
    """Anything else that went wrong: exit 1."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see 'callwatch --help')")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="callwatch", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--config", help="config file (default: $CALLWATCH_CONFIG, else "
                                         "/etc/callwatch/callwatch.toml)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     parser_class=_Parser)
    commands.add_parser("run", help="run the daemon in the foreground until SIGTERM/SIGINT")
    track = commands.add_parser("track", help="start tracking a call (durable, idempotent)")
    track.add_argument("provider")
    track.add_argument("call_id")
    track.add_argument("--metadata", help="a JSON object handed back in every event")
    track.add_argument("--webhook", help="also send this call's events to this URL")
    status = commands.add_parser("status", help="show tracked calls, or one call in detail")
    status.add_argument("provider", nargs="?")
    status.add_argument("call_id", nargs="?")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--limit", type=int, default=50, help="how many calls to list")
    commands.add_parser("check-config", help="validate the config; list every problem")
    migrate = commands.add_parser("migrate", help="bring the database schema up to date, then "
                                                  "exit")
    migrate.add_argument("--from", dest="source", metavar="sqlite:PATH",
                         help="first copy this SQLite database into the (empty) PostgreSQL one")
    demo = commands.add_parser("demo", help="the whole pipeline against the built-in simulator")
    demo.add_argument("--calls", type=int, default=9, help="how many calls to simulate")
    demo.add_argument("--database", help="an empty PostgreSQL database (postgresql://...) "
                                         "instead of a SQLite file in a temporary folder")
    demo.add_argument("--workers", type=int, default=1,
                      help="how many daemons share the work (needs --database)")
    _delivery_parsers(commands)
    return parser


def _delivery_parsers(commands: Any) -> None:
    listing = commands.add_parser("deliveries", help="webhook deliveries, newest first")
    which = listing.add_mutually_exclusive_group()
    which.add_argument("--failed", action="store_true",
                       help="only those waiting after a failed attempt or for a disabled endpoint")
    which.add_argument("--dead", action="store_true", help="only dead ones")
    listing.add_argument("--endpoint", metavar="URL", help="only deliveries to this URL")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.add_argument("--limit", type=int, default=50, help="how many to list")
    replay = commands.add_parser("replay", help="send deliveries again (the same webhook-id)")
    replay.add_argument("event_id", nargs="?", metavar="EVENT_ID",
                        help="every delivery of this event (msg_...), even delivered ones")
    replay.add_argument("--dead", action="store_true",
                        help="every dead delivery, and those waiting for a disabled endpoint")
    replay.add_argument("--since", metavar="TIME",
                        help="with --dead: only events since TIME (RFC 3339, or an age: 2h, 7d)")
    replay.add_argument("--endpoint", metavar="URL", help="only deliveries to this URL")
    replay.set_defaults(limit=None)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``callwatch`` command."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        args = build_parser().parse_args(argv)
        return _dispatch(args)
    except UsageError as exc:
        return _fail(2, str(exc), debug)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except (CommandError, CallwatchError) as exc:  # ours: one line, exit 1
        return _fail(1, str(exc), debug)
    except Exception as exc:
        return _fail(1, f"{type(exc).__name__}: {exc}", debug)


def _fail(code: int, message: str, debug: bool) -> int:
    if debug:
        import traceback

        traceback.print_exc()
    print(f"callwatch: error: {message}", file=sys.stderr)
    return code


def _dispatch(args: argparse.Namespace) -> int:  # noqa: PLR0911 - one return per command
    from worker import logs

    # Commands other than run keep stdout for their output; only warnings go to stderr.
    logs.setup("debug" if args.debug else "warning")
    if args.command == "demo":
        from worker.demo import run_demo

        if args.workers < 1 or (args.workers > 1 and args.database is None):
            raise UsageError("--workers N needs --database postgresql://... (N >= 1)")
        return run_demo(calls=args.calls, database=args.database, workers=args.workers)
    # Only the daemon and check-config need the credentials; an operator's shell that tracks a
    # call or reads status must not need the daemon's secrets.
    needs_secrets = args.command in ("run", "check-config")
    config = load(config_path(args.config, os.environ), resolve_secrets=needs_secrets)
    if args.command == "check-config":
        return _check_config(config)
    if args.command == "run":
        return _run(config)
    if args.command == "track":
        return _track(config, args)
    if args.command == "migrate":
        return anyio.run(_migrate, config, args.source)
    if args.command == "status":
        from worker.status import show_status

        if args.provider is not None and args.call_id is None:
            raise UsageError("status takes either nothing or PROVIDER CALL_ID")
        return anyio.run(show_status, config, args.provider, args.call_id, args.json, args.limit)
    if args.command in ("deliveries", "replay"):
        from worker.webhooks.commands import BadInputError, run_command

        try:
            return anyio.run(run_command, config, args)
        except BadInputError as exc:
            raise UsageError(str(exc)) from None
    raise UsageError(f"unknown command {args.command}")


def _check_config(config: Config) -> int:
    hooks = len(config.webhooks)
    print(f"{config.source}: OK - providers: {', '.join(sorted(config.providers))}; "
          f"{hooks} webhook endpoint{'s' if hooks != 1 else ''}; database {config.worker.database}"
          f"; archive {config.worker.archive_dir or 'off'}")
    return 0


async def _migrate(config: Config, source: str | None) -> int:
    """Opening a store migrates it (under an advisory lock on PostgreSQL, so workers starting
    meanwhile are safe); say where and which schema version it is at now. ``--from
    sqlite:PATH`` first copies a SQLite database into an empty PostgreSQL one."""
    from worker.store.factory import copy_sqlite_into, open_configured

    if source is not None:
        if not source.startswith("sqlite:"):
            raise UsageError("migrate --from takes sqlite:PATH")
        path = Path(source.removeprefix("sqlite:")).expanduser()  # noqa: ASYNC240
        copied = await copy_sqlite_into(config, path)
        print("copied " + ", ".join(f"{n} {table}" for table, n in copied.items()))
    store = await open_configured(config)
    try:
        print(f"database {store.location}: schema version {await store.schema_version()}")
    finally:
        await store.close()
    return 0


def _run(config: Config) -> int:
    import signal

    # A stop request that arrives while we are still starting must not kill us half-way:
    # remember it, and let the daemon stop cleanly as soon as it can listen for signals.
    early: list[int] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda signum, _frame: early.append(signum))

    from worker import logs
    from worker.daemon import Daemon
    from worker.store.base import StoreError

    logs.setup(config.worker.log_level)
    try:
        anyio.run(Daemon(config, environ=os.environ, early_signals=early).run)
    except StoreError as exc:
        raise CommandError(str(exc)) from exc
    return 0


def parse_track_input(config: Config, provider: str, call_id: str, metadata: str | None,
                      webhook: str | None) -> tuple[dict[str, Any], str | None]:
    """Validate ``track`` input (shared with the HTTP API); raise UsageError on bad input."""
    from worker.config import PROVIDER_NAMES
    from worker.config_reader import http_url
    from worker.providers import validate_call_id

    if provider not in config.providers:
        known = "not a provider" if provider not in PROVIDER_NAMES else "not configured"
        raise UsageError(f"unknown provider {provider[:40]!r} ({known}; configured: "
                         f"{', '.join(sorted(config.providers))})")
    if (reason := validate_call_id(provider, call_id)) is not None:
        raise UsageError(f"malformed {provider} call id {call_id[:80]!r}: {reason}")
    meta: dict[str, Any] = {}
    if metadata is not None:
        try:
            meta = json.loads(metadata, parse_constant=_not_json)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--metadata is not valid JSON: {exc.msg} at {exc.pos}") from None
        except (ValueError, RecursionError) as exc:  # NaN/Infinity, huge numbers, deep nesting
            raise UsageError(f"--metadata is not valid JSON: {str(exc)[:100] or 'too deep'}"
                             ) from None
        if not isinstance(meta, dict):
            raise UsageError("--metadata must be a JSON object, like '{\"ticket\": 42}'")
        if len(json.dumps(meta)) > 8192:
            raise UsageError("--metadata is larger than 8 KiB: keep references, not documents")
        if not _utf8(json.dumps(meta, ensure_ascii=False)):
            # Event bodies are UTF-8: a lone surrogate here would fail every event of the call.
            raise UsageError("--metadata holds a lone surrogate (like \\ud800): not Unicode text")
    if webhook is not None and not _utf8(webhook):
        raise UsageError("--webhook is not valid Unicode text")
    if webhook is not None and (problem := http_url(webhook)) is not None:
        raise UsageError(f"--webhook {problem}")
    return meta, webhook


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON value")


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _track(config: Config, args: argparse.Namespace) -> int:
    from worker.store.base import NewCall
    from worker.store.factory import open_configured

    meta, webhook = parse_track_input(config, args.provider, args.call_id, args.metadata,
                                      args.webhook)

    async def track() -> bool:
        store = await open_configured(config)
        try:
            return await store.track(NewCall(provider=args.provider, call_id=args.call_id,
                                             metadata=meta, webhook_url=webhook), time.time())
        finally:
            await store.close()

    created = anyio.run(track)
    print(f"{'tracking' if created else 'already tracked'}: {args.provider} {args.call_id}")
    return 0

