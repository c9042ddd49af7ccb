"""What the terminal is shown: escaped text, tables that fit, durations people read.

Every human-readable line of ``status`` and ``deliveries`` passes through ``printable``:
provider replies (a status, an end reason, an error text) and call ids are data from
outside, and an escape sequence in them must be shown, never obeyed by the terminal.
``--json`` output needs none of this: ``json.dumps`` escapes control characters itself.
"""

from __future__ import annotations

from collections.abc import Sequence

WIDTH = 100  # what every table is cut to: the width of a split screen or a CI log
ELLIPSIS = "…"
MIN_CELL = 8


def printable(text: str) -> str:
    r"""``text`` with control and other non-printing characters escaped (``\x1b``, ``\u202e``).

    Printable text, including non-ASCII letters, is returned as it is.
    """
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def shorten(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, ending in an ellipsis when it was cut."""
    if len(text) <= width:
        return text
    return text[: max(0, width - 1)] + ELLIPSIS


def age(seconds: float) -> str:
    """A short human duration: ``42s``, ``7m``, ``3h12m``, ``2d4h``."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600}h"


def table(rows: Sequence[Sequence[str]], headers: Sequence[str], *,
          shrink: Sequence[str] = (), width: int = WIDTH) -> str:
    """Left-aligned columns two spaces apart, every cell escaped, at most ``width`` wide.

    When the rows are wider than that, the columns named in ``shrink`` (free text: an
    endpoint, an error) are cut, widest first, down to ``MIN_CELL``; the others (ids people
    copy into the next command) are never cut.
    """
    cells = [[printable(c) for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    cuttable = [i for i, h in enumerate(headers) if h in shrink]
    while sum(widths) + 2 * (len(widths) - 1) > width:
        widest = max(cuttable, key=lambda i: widths[i], default=None)
        if widest is None or widths[widest] <= max(MIN_CELL, len(headers[widest])):
            break
        widths[widest] -= 1
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(shorten(c, w).ljust(w) for c, w in zip(r, widths, strict=True))
              for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def say(text: str = "") -> None:
    """Print human-readable text with every line escaped (see ``printable``)."""
    print("\n".join(printable(line) for line in text.split("\n")))
