"""Command line: argument parsing and exit codes only; the work happens elsewhere.

Exit codes (CONTRACT.md): 0 success, 2 bad usage or bad input, 1 any other failure. Errors
are one readable line on stderr; ``--debug`` shows the traceback as well. A reader that goes
away early (``callwatch status | head -1``) is not a failure: exit 0, silently.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any, NoReturn

import anyio

from worker.config import Config, ConfigError, config_path, load
from worker.errors import CallwatchError, CommandError, UsageError
from worker.model import CallStatus, Terminal

__all__ = ["CommandError", "UsageError", "build_parser", "error_lines", "exit_code", "main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see 'callwatch --help')")


DESCRIPTION = """\
Track voice and video calls (Ultravox, Envoy, apifycloud) until they have ended and their
recordings are archived, and tell your systems with signed webhooks.

The daemon (`callwatch run`) does the work; the other commands read and write the same
database, so they work whether or not it runs."""

EPILOG = """\
examples:
  callwatch --config /etc/callwatch/callwatch.toml check-config
  callwatch track ultravox 6f1c2a9e-5b8d-4f3e-9a0b-2c4d6e8f0a1b --metadata '{"ticket": 42}'
  callwatch status --state live
  callwatch deliveries --dead

The config is --config, else $CALLWATCH_CONFIG, else /etc/callwatch/callwatch.toml.
Exit status: 0 success, 2 bad usage or input, 1 any other failure.
`callwatch COMMAND --help` describes each command."""


def version() -> str:
    """The installed distribution's version (package metadata), else the source tree's."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("callwatch")
    except PackageNotFoundError:
        from worker import __version__

        return __version__


def _command(commands: Any, name: str, summary: str, description: str) -> _Parser:
    parser: _Parser = commands.add_parser(
        name, help=summary, description=f"{summary[0].upper()}{summary[1:]}.\n\n{description}",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="callwatch", description=DESCRIPTION, epilog=EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"callwatch {version()}")
    parser.add_argument("--config", metavar="PATH",
                        help="config file (default: $CALLWATCH_CONFIG, else "
                             "/etc/callwatch/callwatch.toml)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(title="commands", dest="command", required=True,
                                     metavar="COMMAND", parser_class=_Parser)
    _command(commands, "run", "run the daemon in the foreground until SIGTERM/SIGINT",
             "Polls the tracked calls, archives recordings and delivers webhooks. Under systemd\n"
             "it reports READY, STATUS and watchdog pings; SIGHUP re-reads the config. The\n"
             "first SIGTERM drains in-flight work for up to [worker] drain_grace seconds.")
    track = _command(commands, "track", "start tracking a call (durable, idempotent)",
                     "Writes the call to the database whether or not the daemon runs; a\n"
                     "running daemon polls it within about a second. Tracking a call twice\n"
                     "changes nothing and exits 0.")
    track.add_argument("provider", metavar="PROVIDER", help="ultravox, envoy or apifycloud")
    track.add_argument("call_id", metavar="CALL_ID", help="the provider's id of the call")
    track.add_argument("--metadata", metavar="JSON",
                       help="a JSON object handed back in every event of this call")
    track.add_argument("--webhook", metavar="URL",
                       help="also send this call's events to this URL")
    status = _command(commands, "status", "show tracked calls, or one call in detail",
                      "Without arguments: counts, deliveries, the archive, and the newest calls\n"
                      "with their next poll (`overdue 2m` when the daemon is behind). With\n"
                      "PROVIDER CALL_ID: every field of one call, its recordings, events and\n"
                      "webhook deliveries. Exits 1 when that call is not tracked.")
    status.add_argument("provider", nargs="?", metavar="PROVIDER",
                        help="with CALL_ID: show this one call in detail")
    status.add_argument("call_id", nargs="?", metavar="CALL_ID")
    status.add_argument("--state", choices=[str(s) for s in (*CallStatus, *Terminal)]
                        + ["untracked", "set_aside"],
                        help="list only calls in this state")
    status.add_argument("--provider", dest="only_provider", metavar="NAME",
                        help="list only calls of this provider")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--limit", type=int, default=50, help="how many calls to list")
    check = _command(commands, "check-config", "validate the config; list every problem",
                     "Reads the config and its secrets as the daemon would, then checks the\n"
                     "machine: the database folder is writable, archive_dir is (or can be) a\n"
                     "folder, intervals are sane. Prints FILE: KEY: MESSAGE per problem and\n"
                     "exits 2, or one OK line and exits 0. Under systemd, secrets come from\n"
                     "$CREDENTIALS_DIRECTORY; give --credentials-dir to check by hand.")
    check.add_argument("--credentials-dir", metavar="DIR",
                       help="look up *_file secrets here first, as the unit's "
                            "$CREDENTIALS_DIRECTORY (e.g. /etc/callwatch/credentials)")
    demo = _command(commands, "demo", "the whole pipeline against the built-in simulator",
                    "Starts simulated providers and a webhook receiver on 127.0.0.1, runs the\n"
                    "real daemon with a temporary config, tracks calls and shows them settle.")
    demo.add_argument("--calls", type=int, default=9, help="how many calls to simulate")
    demo.add_argument("--database", help="an empty PostgreSQL database (postgresql://...) "
                                         "instead of a SQLite file in a temporary folder")
    demo.add_argument("--workers", type=int, default=1,
                      help="how many daemons share the work (needs --database)")
    migrate = _command(commands, "migrate", "bring the database schema up to date, then exit",
                       "Opens the configured database and applies every pending migration\n"
                       "(under an advisory lock on PostgreSQL, so workers starting meanwhile\n"
                       "are safe). --from sqlite:PATH first copies a SQLite database into an\n"
                       "empty PostgreSQL one, so switching loses no tracked call.")
    migrate.add_argument("--from", dest="source", metavar="sqlite:PATH",
                         help="first copy this SQLite database into the (empty) PostgreSQL one")
    _delivery_parsers(commands)
    from worker.cli.backfill import add_parser as add_backfill_parser

    add_backfill_parser(commands)
    from worker.cli.untrack import add_parser as add_untrack_parser

    add_untrack_parser(commands)
    from worker.cli.prune import add_parser as add_prune_parser

    add_prune_parser(commands)
    return parser


def _delivery_parsers(commands: Any) -> None:
    listing = _command(commands, "deliveries", "webhook deliveries, newest first",
                       "Grouped by call and endpoint: event id, event type, state, attempts,\n"
                       "the last answer and when the next attempt is due.\n"
                       "`deliveries show EVENT_ID`: every attempt of one event (time, status,\n"
                       "duration, the first bytes of the reply; URLs without their secrets).")
    listing.add_argument("show", nargs="?", choices=["show"],
                         help="show every attempt of EVENT_ID")
    listing.add_argument("event_id", nargs="?", metavar="EVENT_ID")
    which = listing.add_mutually_exclusive_group()
    which.add_argument("--failed", action="store_true",
                       help="only those waiting after a failed attempt or for a disabled endpoint")
    which.add_argument("--dead", action="store_true", help="only dead ones")
    listing.add_argument("--endpoint", metavar="URL", help="only deliveries to this URL")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.add_argument("--limit", type=int, default=50, help="how many to list")
    replay = _command(commands, "replay", "send deliveries again (the same webhook-id)",
                      "Re-queues every delivery of one event (even delivered ones), or every\n"
                      "dead one; a running daemon sends them within about a second.")
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
    try:
        try:
            code = _main(argv)
        except SystemExit as exc:  # --help and --version print, then exit 0
            code = exc.code if isinstance(exc.code, int) else 0
        sys.stdout.flush()  # here, not at interpreter exit, where a closed pipe cannot be caught
    except BrokenPipeError:
        _stdout_to_devnull()
        return 0
    return code


def _stdout_to_devnull() -> None:
    """The reader of stdout went away (``| head``): drop what is left, quietly.

    The Python docs' recipe: point stdout at /dev/null so that the flush at exit cannot
    fail again and print "Exception ignored ... BrokenPipeError". Exit 0, not 141: the
    reader got what it asked for, and CONTRACT.md's exit codes stay 0, 1 and 2.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a real file (a test's capture)
        pass
    finally:
        os.close(devnull)


def _main(argv: Sequence[str] | None) -> int:
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        args = build_parser().parse_args(argv)
        return _dispatch(args)
    except BrokenPipeError:
        raise
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if debug:
            import traceback

            traceback.print_exc()
        prefix = _error_prefix()
        for line in error_lines(exc):
            print(prefix + line, file=sys.stderr)
        return exit_code(exc)


def exit_code(exc: BaseException) -> int:
    """The exit status for an error, the one place that decides it (CONTRACT.md): 2 for bad
    usage or input (a ``UsageError``: an option, an argument, the config), 130 for Ctrl-C, 1 for
    anything else, ours (``CallwatchError``) or a bug."""
    if isinstance(exc, UsageError):
        return 2
    if isinstance(exc, KeyboardInterrupt):
        return 130
    return 1


def error_lines(exc: BaseException) -> list[str]:
    """What stderr shows for an error: the config's problems one per line (``FILE: KEY:
    MESSAGE``), else one line; an error that is not ours is named by its type (a bug)."""
    if isinstance(exc, ConfigError):
        return list(exc.problems)
    message = str(exc) if isinstance(exc, CallwatchError) else f"{type(exc).__name__}: {exc}"
    return [f"callwatch: error: {message}"]


def _error_prefix() -> str:
    """``<3>`` when stderr is journald's stream (check-config run by ``ExecReload=``): the
    problems then reach ``journalctl -p err`` like the daemon's own errors."""
    from worker import logs

    return "<3>" if logs.is_journal(sys.stderr, os.environ) else ""


def _dispatch(args: argparse.Namespace) -> int:  # noqa: PLR0911, PLR0912 - one branch per command
    from worker import logs

    # Commands other than run keep stdout for their output; only warnings go to stderr.
    logs.setup("debug" if args.debug else "warning",
               journal=logs.is_journal(sys.stderr, os.environ))
    if args.command == "demo":
        from worker.demo import run_demo

        if args.workers < 1 or (args.workers > 1 and args.database is None):
            raise UsageError("--workers N needs --database postgresql://... (N >= 1)")
        return run_demo(main, calls=args.calls, database=args.database, workers=args.workers)
    # Only the daemon and check-config need the credentials; an operator's shell that tracks a
    # call or reads status must not need the daemon's secrets.
    needs_secrets = args.command in ("run", "check-config", "backfill")
    environ: dict[str, str] = dict(os.environ)
    if getattr(args, "credentials_dir", None):
        environ["CREDENTIALS_DIRECTORY"] = args.credentials_dir
    config = load(config_path(args.config, environ), environ, resolve_secrets=needs_secrets)
    if args.command == "check-config":
        return _check_config(config)
    if args.command == "run":
        return _run(config)
    if args.command == "track":
        return _track(config, args)
    if args.command == "migrate":
        return anyio.run(_migrate, config, args.source)
    if args.command == "status":
        from worker.cli.status import show_status

        if args.provider is not None and args.call_id is None:
            raise UsageError("status takes either nothing or PROVIDER CALL_ID")
        return anyio.run(partial(show_status, config, args.provider, args.call_id, args.json,
                                 args.limit, state=args.state, only_provider=args.only_provider))
    if args.command == "untrack":
        from worker.cli.untrack import run_untrack
        from worker.track_input import TrackInputError

        try:
            return anyio.run(run_untrack, config, args)
        except TrackInputError as exc:
            raise UsageError(str(exc)) from None
    if args.command == "backfill":
        from worker.cli.backfill import run_backfill

        return run_backfill(config, args)  # its BadInputError is a UsageError: exit 2
    if args.command == "prune":
        from worker.cli.prune import run_prune

        return run_prune(config, args)  # its BadInputError is a UsageError: exit 2
    if args.command in ("deliveries", "replay"):
        from worker.cli.deliveries import run_command

        return anyio.run(run_command, config, args)
    raise UsageError(f"unknown command {args.command}")


def _check_config(config: Config) -> int:
    from worker.preflight import preflight

    if problems := preflight(config):
        raise ConfigError(problems)
    hooks = len(config.webhooks)
    print(f"{config.source}: OK - providers: {', '.join(sorted(config.providers))}; "
          f"{hooks} webhook endpoint{'s' if hooks != 1 else ''}; database {config.worker.database}"
          f"; archive {config.worker.archive_dir or config.worker.archive or 'off'}")
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

    logs.setup(config.worker.log_level, journal=logs.is_journal(sys.stderr, os.environ))
    # A StoreError (a CallwatchError) ends here as one line and exit 1, like any of ours.
    anyio.run(Daemon(config, environ=os.environ, early_signals=early).run)
    return 0


def _resolve(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to now; none when it does not resolve (the relay
    checks again at every attempt)."""
    import socket

    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    return [str(info[4][0]) for info in found]


def _track(config: Config, args: argparse.Namespace) -> int:
    from worker.store.base import NewCall
    from worker.store.factory import open_configured
    from worker.track_input import TrackInputError, check_input, check_resolution, webhook_host

    try:
        wanted = check_input(config, args.provider, args.call_id, args.metadata, args.webhook)
        if wanted.webhook is not None:
            check_resolution(config, wanted.webhook, _resolve(*webhook_host(wanted.webhook)))
    except TrackInputError as exc:
        # The shared messages name the field ("metadata ..."): here it is an option.
        message = str(exc)
        raise UsageError(f"--{message}" if message.startswith(("metadata", "webhook"))
                         else message) from None
    meta, webhook = wanted.metadata, wanted.webhook

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

