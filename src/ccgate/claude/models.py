"""Ask Claude Code which models it offers, so the catalogue follows the CLI.

The CLI answers the SDK's ``initialize`` request with its model list: each
name it offers (``default``, ``opus``, ``sonnet``...), the model id that name
stands for today, a display name and a description that carries the price
("Opus 5.5 · ... · $4/$20 per Mtok"). Reading it starts one CLI process and
sends no model request. The answer is kept in the data dir and reused while
the CLI binary is the same file (same path, size and modification time), so a
restart does not pay for it again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

from claude_agent_sdk import ClaudeAgentOptions, ClaudeSDKClient

from ccgate.engine.models import CliModel, Price

__all__ = ["ask_cli_models", "cached_cli_models", "parse_cli_models"]

log = logging.getLogger("ccgate.engine")

_PRICE = re.compile(r"\$(?P<input>\d+(?:\.\d+)?)/\$(?P<output>\d+(?:\.\d+)?) per Mtok")


def parse_cli_models(raw: object) -> list[CliModel]:
    """Return the entries of the CLI's ``models`` list that name a model id."""
    if not isinstance(raw, list):
        return []
    models: list[CliModel] = []
    for item in raw:
        if not isinstance(item, dict):
            continue
        value, resolved = item.get("value"), item.get("resolvedModel")
        if not isinstance(value, str) or not isinstance(resolved, str) or not resolved:
            continue
        description = str(item.get("description") or "")
        found = _PRICE.search(description)
        price = Price.of(float(found["input"]), float(found["output"])) if found else None
        name = description.split(" · ")[0].strip()
        display = f"Claude {name}" if name and not name.startswith(("Use ", "Claude")) else name
        models.append(CliModel(value=value, resolved=resolved, display_name=display, price=price))
    return models


async def ask_cli_models(options: ClaudeAgentOptions) -> tuple[list[CliModel], Any]:
    """Start a CLI with ``options``, read its ``initialize`` answer and end it.

    Return the parsed models and the raw list (what is cached).
    """
    client = ClaudeSDKClient(options)
    try:
        await client.connect()
        info = await client.get_server_info() or {}
    finally:
        with contextlib.suppress(Exception):
            await client.disconnect()
    raw = info.get("models")
    return parse_cli_models(raw), raw


def _stamp(cli: Path) -> list[object]:
    stat = cli.resolve().stat()
    return [str(cli.resolve()), stat.st_size, int(stat.st_mtime)]


async def cached_cli_models(
    cli: Path, cache: Path, options: ClaudeAgentOptions
) -> tuple[list[CliModel], int]:
    """Return the CLI's models (and when they were first read), from ``cache`` if still valid."""
    stamp = _stamp(cli)
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        kept = json.loads(cache.read_text())
        if kept["cli"] == stamp:
            return parse_cli_models(kept["models"]), int(kept["seen_at"])
    models, raw = await ask_cli_models(options)
    seen_at = int(time.time())
    if models:
        cache.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps({"cli": stamp, "seen_at": seen_at, "models": raw}))
        tmp.replace(cache)
    return models, seen_at
