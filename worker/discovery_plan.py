"""PURE: which window a discovery sweep lists, which listed calls it tracks, where its mark goes.

Vocabulary:

* the **floor** is the earliest creation time discovery ever tracks: ``discover_since`` when
  configured, else when discovery first ran for that provider (stored, so a restart keeps it).
* the **mark** (high-water mark) is durable: every call created before it has been listed by
  some sweep. A complete sweep moves it to the time the sweep began.
* a sweep lists ``[max(floor, mark - overlap), now]``. The overlap catches calls that appear
  in the list late (created before the mark, listed after it); tracking is idempotent, so
  listing a call twice costs a no-op insert.
* a sweep cut short (429, 5xx, a page bound) moves the mark only for a provider whose pages
  come oldest first: everything created before the newest call it read has been seen. For a
  provider without a documented order the mark stays, and the next sweep lists the window again.
"""

from __future__ import annotations

from dataclasses import dataclass

OVERLAP = 600.0  # seconds a call may take to appear in the list after it was created


@dataclass(frozen=True, kw_only=True, slots=True)
class Window:
    """Creation times ``[since, until]``, both inclusive; ``until`` None: open-ended."""

    since: float
    until: float | None


def floor_of(configured_since: float | None, first_ran_at: float) -> float:
    """The earliest creation time discovery tracks (``discover_since`` wins when set)."""
    return first_ran_at if configured_since is None else configured_since


def sweep_window(*, floor: float, mark: float | None, now: float,
                 overlap: float = OVERLAP) -> Window:
    """The window one periodic sweep lists: from the mark less the overlap, never below floor."""
    if mark is None:
        return Window(since=min(floor, now), until=now)
    return Window(since=min(max(floor, mark - overlap), now), until=now)


def wanted(created: float | None, window: Window) -> bool:
    """Whether a listed call is one to track: created inside the window.

    A call whose list item gives no time (Envoy's items may not) is trusted to the provider's
    own date filter, which the request carried.
    """
    if created is None:
        return True
    return created >= window.since and (window.until is None or created <= window.until)


def mark_after(*, old: float | None, window: Window, complete: bool, ordered: bool,
               newest_read: float | None) -> float | None:
    """Where the mark goes after a sweep; it never moves back, nor past the sweep's start."""
    if complete and window.until is not None:
        new: float | None = window.until
    elif ordered and newest_read is not None:
        new = newest_read if window.until is None else min(newest_read, window.until)
    else:
        new = None
    if new is None:
        return old
    return new if old is None else max(old, new)
