"""``callwatch untrack PROVIDER CALL_ID``: stop polling and archiving one call.

No event is emitted (the consumer asked for it, it needs no telling); deliveries already
queued still go out; recordings not yet archived are dropped from the queue, archived ones
stay. The call stays readable (``status`` shows it ``untracked``) until retention prunes it.
Idempotent: a second untrack exits 0 too. The same checks as ``track`` refuse an unknown
provider or a malformed id (exit 2) before the database is touched.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import structlog

from worker.config import Config
from worker.store.base import StoreNotFoundError
from worker.store.factory import open_configured
from worker.track_input import check_input

log = structlog.get_logger("worker.cli.untrack")


def add_parser(commands: Any) -> None:
    untrack = commands.add_parser(
        "untrack", help="stop polling and archiving a call (no event; queued deliveries go out)",
        description="Stop polling and archiving a call, for good. No event is emitted;\n"
                    "deliveries already queued still go out; archived recordings stay.\n"
                    "Exits 0 when the call is tracked (also the second time), 1 when not.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    untrack.add_argument("provider", metavar="PROVIDER", help="ultravox, envoy or apifycloud")
    untrack.add_argument("call_id", metavar="CALL_ID", help="the provider's id of the call")


async def run_untrack(config: Config, args: argparse.Namespace) -> int:
    """0 when the call is (now) untracked, 1 when it is not tracked; TrackInputError (exit 2)
    for an unknown provider or a malformed id."""
    check_input(config, args.provider, args.call_id, None, None)
    try:
        store = await open_configured(config, create=False)
    except StoreNotFoundError:
        store = None
    try:
        found = store is not None and await store.untrack(args.provider, args.call_id,
                                                           time.time())
    finally:
        if store is not None:
            await store.close()
    if not found:
        print(f"callwatch: {args.provider} {args.call_id[:80]!r} is not tracked",
              file=sys.stderr)
        return 1
    log.info("call.untracked", provider=args.provider, call_id=args.call_id)
    print(f"untracked: {args.provider} {args.call_id}")
    return 0
