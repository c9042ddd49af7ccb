"""One base for every error callwatch raises on purpose.

Why one tree: the command line maps our errors to exit codes and one-line messages, and
anything that is *not* a ``CallwatchError`` is a bug (a traceback is then the right answer).
Each area hangs its own errors under this base (the store's are in ``worker/store/errors.py``).
"""

from __future__ import annotations


class CallwatchError(Exception):
    """An error of ours, with a message fit to show a user on one line."""
