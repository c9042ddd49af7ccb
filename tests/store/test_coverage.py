"""The contract suite exercises every method of the store contract."""

from __future__ import annotations

import inspect
from pathlib import Path

from worker.store.base import Store


def contract_names() -> set[str]:
    """Every method and property the ``Store`` Protocol (with its parts) declares."""
    names: set[str] = set()
    for part in Store.__mro__:
        if part.__module__ == "worker.store.base":
            names |= {name for name, value in vars(part).items()
                      if not name.startswith("_") and (inspect.isfunction(value)
                                                       or isinstance(value, property))}
    return names


def test_every_contract_method_is_called_by_the_suite() -> None:
    """A method added to the contract without a contract test fails here."""
    suite = "".join(p.read_text(encoding="utf-8") for p in Path(__file__).parent.glob("test_*.py")
                    if p.name != Path(__file__).name)
    missing = sorted(name for name in contract_names() if f".{name}" not in suite)
    assert contract_names() and missing == []
