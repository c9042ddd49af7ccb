"""The Prometheus text exposition format, version 0.0.4: enough of it to write our metrics.

Each family is ``# HELP``, ``# TYPE`` and its samples; label values are escaped (backslash,
double quote, newline) and numbers are written the way Prometheus parses them (``+Inf``,
``NaN``). Writing it here keeps ``prometheus-client`` (and its global registry) out of the
daemon; the tests parse our output with that library's parser.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"

Labels = Mapping[str, str]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _sample(name: str, labels: Labels, value: float) -> str:
    if not labels:
        return f"{name} {_number(value)}"
    inside = ",".join(f'{key}="{_escape(str(val))}"' for key, val in labels.items())
    return f"{name}{{{inside}}} {_number(value)}"


class Exposition:
    """Collects families in order and renders them as one text document."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def _head(self, name: str, kind: str, help_text: str) -> None:
        self._lines.append(f"# HELP {name} {help_text.replace(chr(10), ' ')}")
        self._lines.append(f"# TYPE {name} {kind}")

    def gauge(self, name: str, help_text: str,
              samples: Iterable[tuple[Labels, float]]) -> None:
        self._head(name, "gauge", help_text)
        self._lines.extend(_sample(name, labels, value) for labels, value in samples)

    def counter(self, name: str, help_text: str,
                samples: Iterable[tuple[Labels, float]]) -> None:
        """``name`` ends in ``_total``, as the format's counters do."""
        self._head(name, "counter", help_text)
        self._lines.extend(_sample(name, labels, value) for labels, value in samples)

    def summary(self, name: str, help_text: str, total: float, count: float) -> None:
        """A summary without quantiles: rate(_sum)/rate(_count) is the mean over any window."""
        self._head(name, "summary", help_text)
        self._lines.append(_sample(f"{name}_sum", {}, total))
        self._lines.append(_sample(f"{name}_count", {}, count))

    def render(self) -> bytes:
        return ("\n".join(self._lines) + "\n").encode("utf-8")
