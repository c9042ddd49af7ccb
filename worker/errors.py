"""The root of callwatch's own errors: every error we raise on purpose derives from it.

Minimal here (the ``seam`` branch grows the tree: store, config, usage); the CLI maps the
subclasses to exit codes.
"""

from __future__ import annotations


class CallwatchError(Exception):
    """Any error of callwatch's own making (as opposed to a bug)."""
