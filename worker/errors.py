"""One base for every error callwatch raises on purpose.

Why one tree: the command line maps our errors to exit codes and one-line messages in one
place (``worker.cli.exit_code``: a ``UsageError`` exits 2, any other ``CallwatchError`` 1), and
anything that is *not* a ``CallwatchError`` is a bug (``--debug`` then shows the traceback).
Each area defines its own errors in its own module and hangs them under this base::

    CallwatchError                      an error of ours; its message is one line for a user
     ├── UsageError                     bad usage or bad input: exit 2 (the API answers 4xx)
     │    ├── ConfigError               config.py: every problem of a config file (.problems)
     │    ├── TrackInputError           track_input.py: what `track` and POST /v1/calls refuse
     │    ├── deliveries.BadInputError  cli/deliveries.py: `deliveries` and `replay` options
     │    └── backfill.BadInputError    cli/backfill.py: `backfill` options
     ├── CommandError                   a command could not do its work: exit 1
     ├── StoreError                     store/errors.py: what a caller may do, not which driver
     │    ├── TransientStoreError       busy, locked, disk full, connection lost: retry
     │    ├── PermanentStoreError       constraint, unstorable data, corrupt file: set aside
     │    ├── StoreNotFoundError        no database where one was expected
     │    └── BackendUnavailableError   a database kind this build does not have
     ├── TargetError                    archive/target.py: an archive target failed (.kind)
     ├── DownloadError                  archive/download.py: one try at a recording failed
     │    ├── LinkRejectedError         401/403: the link is dead, a fresh one may work
     │    ├── GoneError                 404/410
     │    ├── TooLargeError             over max_size: refused for good
     │    ├── NotARecordingError        an answer that is not the recording
     │    └── TransientError            worth another attempt later (.retry_after)
     ├── UnparseableError               providers/_fields.py: a reply not of the documented shape
     ├── UnsupportedEncodingError       providers/_inflate.py: a content coding we cannot bound
     ├── HttpError                      api/web.py: answer this status (also Starlette's
     │                                  HTTPException, so Starlette renders it)
     ├── VerificationError              api/ultravox.py: a webhook not provably from Ultravox
     ├── ListenError                    api/server.py: the API cannot listen where configured
     └── private control flow, never seen outside their module: providers/_http.py's
         _RetryableError, archive/s3.py's _AbortError, archive/download.py's _CutError and
         _StartOverError

Provider adapters and the archive turn their errors into values (``PollResult``, a
``Fault``) before they leave the module that raised them: only ``UsageError``,
``StoreError``, ``ListenError`` and ``CommandError`` are expected to reach the command line.
The simulator (``worker/simulator``), a test and demo tool, keeps its own errors.
``tests/test_errors.py`` fails when an exception class of ours sits outside this tree.
"""

from __future__ import annotations


class CallwatchError(Exception):
    """An error of ours, with a message fit to show a user on one line."""


class UsageError(CallwatchError):
    """Bad usage or bad input (an option, an argument, a config file): exit 2."""


class CommandError(CallwatchError):
    """A command could not do its work for a reason that is not bad input: exit 1."""
