"""The store's errors: what a caller may do about a failure, not which driver raised it.

Every backend translates its driver's exceptions at its boundary (``raise ... from exc``) into
one of these, so the scheduler, relay and archiver decide the same way on any database:

- ``TransientStoreError``: busy, locked, disk full, connection lost. The same write may work
  in a moment: retry it (``store/retry.py``), keeping the work in memory meanwhile.
- ``PermanentStoreError``: a constraint, data that cannot be stored, a corrupt file. The same
  write fails the same way every time: never retry it as it is; narrow the batch down to the
  item that causes it and set that item aside.
"""

from __future__ import annotations

from worker.errors import CallwatchError


class StoreError(CallwatchError):
    """The database cannot do what was asked (see the subclasses for what to do about it)."""


class TransientStoreError(StoreError):
    """Busy, locked, disk full, connection lost: the same operation may succeed later."""


class PermanentStoreError(StoreError):
    """A constraint, unstorable data, a corrupt database: retrying as it is cannot help."""


class StoreNotFoundError(StoreError):
    """``open_store(..., create=False)`` found no database: nothing was ever tracked there."""


class BackendUnavailableError(StoreError):
    """The configured database kind is not built into this callwatch."""
