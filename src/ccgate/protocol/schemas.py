"""Structured outputs: a client's JSON schema, checked and made what Claude Code can enforce.

Every front door takes a schema its own way (chat completions' ``response_format``,
the Responses API's ``text.format``, the Messages API's ``output_config.format``);
:func:`output_schema` makes one :class:`~ccgate.engine.turn.OutputSchema` of it or
refuses it with a 400 that names the field:

- the schema must be a valid JSON Schema (checked with its declared draft; the
  ``$schema`` key is dropped, since Claude Code validates with draft-07 and
  refuses newer drafts by name);
- a schema whose root is not an object is wrapped as the one property ``value`` of
  an object (Claude Code's answer tool takes an object), and the answer unwrapped;
- ``json_object`` (JSON, any object) is the schema ``{"type": "object"}``.

Claude Code enforces it by validating and asking again within the turn
(``structured_output_attempts``); ``format`` keywords are not checked.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
from jsonschema.exceptions import SchemaError

from ccgate.engine.turn import OutputSchema
from ccgate.errors import InvalidRequest

__all__ = ["ANY_OBJECT", "SCHEMA_MAX_BYTES", "output_schema"]

#: The schema of ``json_object``: any JSON object.
ANY_OBJECT: dict[str, Any] = {"type": "object"}
#: The largest schema accepted (bytes of its JSON).
SCHEMA_MAX_BYTES = 64 * 1024


def output_schema(schema: Any, param: str, *, name: str | None = None) -> OutputSchema:
    """Return the structured output ``schema`` asks for, or raise InvalidRequest (``param``)."""
    if not isinstance(schema, dict):
        raise InvalidRequest(f"{param}: a JSON schema is an object", param=param)
    text = json.dumps(schema, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if len(text.encode()) > SCHEMA_MAX_BYTES:
        raise InvalidRequest(
            f"{param}: the schema is larger than {SCHEMA_MAX_BYTES // 1024} KiB", param=param
        )
    try:
        validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
        validator.check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.path) or "the root"
        raise InvalidRequest(
            f"{param}: not a valid JSON Schema at {where}: {exc.message[:200]}", param=param
        ) from exc
    given = {k: v for k, v in schema.items() if k != "$schema"}
    wrapped = given.get("type") != "object"
    if wrapped:
        defs = {k: given.pop(k) for k in ("$defs", "definitions") if k in given}
        given = {
            "type": "object",
            "properties": {"value": given},
            "required": ["value"],
            "additionalProperties": False,
            **defs,
        }
    canonical = json.dumps(given, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return OutputSchema(schema=given, text=canonical, wrapped=wrapped, name=name)
