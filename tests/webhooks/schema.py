"""The published event schema (docs/events.schema.json), loose as published and strict."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

SCHEMA_PATH = Path(__file__).parents[2] / "docs" / "events.schema.json"


@cache
def validators() -> tuple[Draft202012Validator, Draft202012Validator]:
    """(as published: unknown fields allowed; strict: every emitted field is documented)."""
    published = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(published)
    strict = copy.deepcopy(published)
    _forbid_unknown(strict)
    return Draft202012Validator(published), Draft202012Validator(strict)


def check_body(body: bytes) -> dict[str, Any]:
    """Parse a webhook body and validate it against both; raise on the first error."""
    document = json.loads(body)
    for validator in validators():
        validator.validate(document)
    assert isinstance(document, dict)
    return document


def _forbid_unknown(node: Any) -> None:
    if isinstance(node, dict):
        if node.get("type") == "object" and "properties" in node:
            node["additionalProperties"] = False
        for value in node.values():
            _forbid_unknown(value)
    elif isinstance(node, list):
        for value in node:
            _forbid_unknown(value)
