"""Write the generated parts of the reference pages, from ccgate's own objects.

The pages in this folder call these functions from cog blocks; regenerate them with

    cog -r docs/reference/*.md

(``tests/test_docs.py`` fails, saying so, when a page is stale.) Each function
returns Markdown: the settings from ``ccgate.config.Settings`` and the flags of the
command-line parser, every command's ``--help``, and the OpenAPI document that a
running gateway serves at ``/openapi.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import subprocess
import sys
import tempfile
import tomllib
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from ccgate.config import ENV_PREFIX, Settings

__all__ = [
    "api_reference",
    "command_help",
    "commands",
    "demo_help",
    "openapi_document",
    "settings_table",
    "setting_flags",
]

ROOT = Path(__file__).resolve().parents[2]

#: What the help of a command that reads the settings says instead of their flags.
SETTINGS_NOTE = "every setting's flag (`--host`, `--port`, ...): see [Settings](settings.md)"

#: The width help text is wrapped at, whatever the terminal that runs cog.
COLUMNS = 96


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the ``ccgate`` command, found through its entry point."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    module_name, _, _ = project["project"]["scripts"]["ccgate"].partition(":")
    parser: argparse.ArgumentParser = importlib.import_module(module_name).build_parser()
    return parser


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def commands() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Yield every command line (``ccgate``, ``ccgate keys create``, ...) and its parser."""

    def walk(prefix: str, parser: argparse.ArgumentParser) -> Iterator[tuple[str, Any]]:
        yield prefix, parser
        for name, sub in _subparsers(parser).items():
            yield from walk(f"{prefix} {name}", sub)

    yield from walk("ccgate", build_parser())


@contextlib.contextmanager
def _columns() -> Iterator[None]:
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(COLUMNS)
    try:
        yield
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved


class _WithoutSettings(argparse.HelpFormatter):
    """Leave the settings' flags out of a help text: the settings reference lists them."""

    @staticmethod
    def _keep(actions: Any) -> list[argparse.Action]:
        return [a for a in actions if a.dest not in Settings.model_fields]

    def add_usage(self, usage: Any, actions: Any, groups: Any, prefix: Any = None) -> None:
        super().add_usage(usage, self._keep(actions), groups, prefix)

    def add_arguments(self, actions: Any) -> None:
        super().add_arguments(self._keep(actions))


def _help(parser: argparse.ArgumentParser) -> str:
    """Return ``parser``'s help as a terminal of :data:`COLUMNS` shows it, without settings."""
    saved = parser.formatter_class
    parser.formatter_class = _WithoutSettings
    try:
        with _columns():
            return parser.format_help().rstrip() + "\n"
    finally:
        parser.formatter_class = saved


def _takes_settings(parser: argparse.ArgumentParser) -> bool:
    return any(a.dest in Settings.model_fields for a in parser._actions)


def setting_flags() -> dict[str, list[str]]:
    """Return each setting's command-line flags, as ``ccgate serve`` takes them."""
    serve = _subparsers(build_parser())["serve"]
    flags: dict[str, list[str]] = {}
    for action in serve._actions:
        if action.dest in Settings.model_fields:
            flags[action.dest] = list(action.option_strings)
    return flags


def _show(value: Any) -> str:
    if value is None or value == ():
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{value}`"


def _kind(annotation: Any) -> str:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if args and typing.get_origin(annotation) is not tuple:
        return _kind(args[0])
    if typing.get_origin(annotation) is tuple:
        return "list of names"
    names = {
        str: "text",
        int: "integer",
        float: "number",
        bool: "switch",
        Path: "path",
        SecretStr: "secret",
    }
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _limits(metadata: list[Any]) -> str:
    """Return a field's bounds (``1–256``, ``> 0``) from its annotated-types metadata."""
    bounds = {
        name: getattr(m, name)
        for m in metadata
        for name in ("ge", "gt", "le", "lt")
        if hasattr(m, name)
    }
    if "ge" in bounds and "le" in bounds:
        return f"{bounds['ge']}–{bounds['le']}"
    signs = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    return ", ".join(f"{signs[name]} {value}" for name, value in bounds.items())


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def settings_table() -> str:
    """Return a Markdown table of every setting: name, flag, variable, default, meaning."""
    flags = setting_flags()
    rows = [
        "| setting | flag | environment variable | default | kind | meaning |",
        "|---|---|---|---|---|---|",
    ]
    for name, field in Settings.model_fields.items():
        flag = " / ".join(f"`{f}`" for f in flags.get(name, []))
        env = f"`{ENV_PREFIX}{name.upper()}`"
        kind = _kind(field.annotation)
        limits = _limits(field.metadata)
        if limits:
            kind += f" ({limits})"
        meaning = field.description or ""
        rows.append(
            f"| `{name}` | {flag} | {env} | {_show(field.default)} | {_cell(kind)} "
            f"| {_cell(meaning)} |"
        )
    return "\n".join(rows) + "\n"


def command_help() -> str:
    """Return a section per ``ccgate`` command with its ``--help``."""
    parts = []
    for line, parser in commands():
        text = f"### `{line}`\n\n```text\n{_help(parser)}```\n"
        if _takes_settings(parser):
            text += f"\n`{line}` also takes {SETTINGS_NOTE}.\n"
        parts.append(text)
    return "\n".join(parts)


def demo_help() -> str:
    """Return the ``--help`` of ``python -m ccgate.demo`` (run in a subprocess)."""
    env = {**os.environ, "COLUMNS": str(COLUMNS), "PYTHONPATH": _pythonpath()}
    done = subprocess.run(
        [sys.executable, "-m", "ccgate.demo", "--help"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        timeout=60,
    )
    return f"### `python -m ccgate.demo`\n\n```text\n{done.stdout.rstrip()}\n```\n"


def _pythonpath() -> str:
    """Return a PYTHONPATH under which the subprocess imports the ccgate this one does."""
    import ccgate

    here = str(Path(ccgate.__file__).resolve().parents[1])
    rest = os.environ.get("PYTHONPATH")
    return here if not rest else os.pathsep.join([here, rest])


def openapi_document() -> dict[str, Any]:
    """Return what ``GET /openapi.json`` answers, from a gateway run with a scripted runner."""
    from starlette.testclient import TestClient

    from ccgate.app import create_app
    from ccgate.testing import ScriptedRunner

    with tempfile.TemporaryDirectory() as folder:
        app = create_app(Settings(data_dir=Path(folder)), runner=ScriptedRunner(), environ={})
        with TestClient(app, base_url="http://127.0.0.1") as client:
            answer = client.get("/openapi.json")
    answer.raise_for_status()
    document: dict[str, Any] = answer.json()
    return document


def _ref_name(schema: dict[str, Any]) -> str:
    ref = schema.get("$ref", "")
    return ref.rsplit("/", 1)[-1] if ref else ""


def _type(schema: dict[str, Any]) -> str:
    """Return a schema's type in a few words: ``string``, ``integer (1–100)``, ``a`` | ``b``."""
    if "$ref" in schema:
        return _ref_name(schema)
    if "anyOf" in schema:
        kinds = [_type(s) for s in schema["anyOf"] if s.get("type") != "null"]
        return " or ".join(dict.fromkeys(k for k in kinds if k)) or "any"
    if "enum" in schema:
        return " | ".join(f"`{v}`" for v in schema["enum"])
    kind = schema.get("type", "any")
    text = " or ".join(kind) if isinstance(kind, list) else str(kind)
    if "minimum" in schema and "maximum" in schema:
        text += f" ({schema['minimum']}–{schema['maximum']})"
    if "maxLength" in schema and schema["maxLength"]:
        text += f" (at most {schema['maxLength']} characters)"
    return text


def _events(schema: dict[str, Any]) -> list[str]:
    return [s["title"] for s in schema.get("anyOf", []) if "title" in s]


def _answers(op: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Return ``(status, content types, description)`` of each answer of an operation."""
    rows = []
    for status in sorted(op.get("responses", {}), key=lambda s: (len(s), s)):
        response = op["responses"][status]
        content = response.get("content", {})
        media = ", ".join(f"`{m}`" for m in content) or "none"
        text = " ".join(response.get("description", "").split())
        events = _events(content.get("text/event-stream", {}).get("schema", {}))
        if events and "event: <name>" in text:
            text = "Server-Sent Events: " + ", ".join(f"`{e}`" for e in events) + "."
        rows.append((status, media, _cell(text)))
    return rows


#: An error answer described alike by at least this many operations is listed once, up top.
COMMON = 5


def _operation(method: str, path: str, op: dict[str, Any], common: set[Any]) -> str:
    lines = [f"### `{method.upper()} {path}`", ""]
    if op.get("summary"):
        lines += [f"**{op['summary']}.** " + " ".join(op.get("description", "").split()), ""]
    params = op.get("parameters", [])
    if params:
        lines += [
            "| parameter | in | required | type | default | meaning |",
            "|---|---|---|---|---|---|",
        ]
        for p in params:
            schema = p.get("schema", {})
            default = _show(schema["default"]) if "default" in schema else ""
            required = "yes" if p.get("required") else "no"
            meaning = _cell(
                " ".join((p.get("description") or schema.get("description", "")).split())
            )
            lines.append(
                f"| `{p['name']}` | {p['in']} | {required} | {_cell(_type(schema))} "
                f"| {default} | {meaning} |"
            )
        lines.append("")
    body = op.get("requestBody")
    if body:
        for media, content in body.get("content", {}).items():
            name = _ref_name(content.get("schema", {})) or "object"
            required = "required" if body.get("required") else "optional"
            lines += [f"Request body ({required}): `{media}`, schema `{name}`.", ""]
    answers = _answers(op)
    own = [a for a in answers if a not in common]
    shared = [a[0] for a in answers if a in common]
    if own:
        lines += ["| status | content types | answer |", "|---|---|---|"]
        lines += [f"| {status} | {media} | {text} |" for status, media, text in own]
        lines.append("")
    if shared:
        lines.append(f"Also {', '.join(shared)}: see [common answers](#common-answers).")
    return "\n".join(lines) + "\n"


def api_reference(document: dict[str, Any] | None = None) -> str:
    """Return every path of the OpenAPI document as Markdown, grouped by tag."""
    document = document if document is not None else openapi_document()
    operations = [
        (method, path, op)
        for path, item in document["paths"].items()
        for method, op in item.items()
    ]
    counts: dict[tuple[str, str, str], int] = {}
    for _, _, op in operations:
        for answer in _answers(op):
            counts[answer] = counts.get(answer, 0) + 1
    common = {a for a, count in counts.items() if count >= COMMON and not a[0].startswith("2")}
    info = document["info"]
    parts = [
        f"OpenAPI {document['openapi']}, *{info['title']}* {info['version']}: "
        f"{info.get('summary', '')}.\n",
        "## Common answers\n",
        "Answers that many operations share; each operation below names those it gives.\n",
        "| status | content types | answer |\n|---|---|---|\n"
        + "".join(
            f"| {status} | {media} | {text} |\n"
            for status, media, text in sorted(common, key=lambda a: (len(a[0]), a))
        ),
    ]
    groups: dict[str, list[str]] = {}
    for method, path, op in operations:
        tag = (op.get("tags") or ["Other"])[0]
        groups.setdefault(tag, []).append(_operation(method, path, op, common))
    for tag, sections in groups.items():
        parts.append(f"## {tag}\n")
        parts.extend(sections)
    schemas = sorted(document.get("components", {}).get("schemas", {}))
    if schemas:
        parts.append("## Schemas\n")
        parts.append(
            "Request bodies named above, as `/openapi.json` defines them: "
            + ", ".join(f"`{s}`" for s in schemas)
            + ".\n"
        )
    return "\n".join(parts)


if __name__ == "__main__":
    print(json.dumps(openapi_document(), indent=2))
