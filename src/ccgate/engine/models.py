"""The model catalogue: which names clients may use and what each costs.

The catalogue follows Claude Code rather than a list of its own that goes
stale: at start ccgate asks the bundled CLI for the models it offers (its
aliases, what each resolves to, display names and prices; see
``claude.models``) and :meth:`Catalogue.adopt` merges them over the
packaged ``models.json``, which only bridges the time until the CLI answered
and prices older ids.

Names resolve in this order (case and surrounding spaces do not matter):

1. a provider prefix is dropped (``anthropic/``, ``claude-code/``,
   ``us.anthropic.``...), and a dotted version becomes Claude's dashed one
   (``claude-sonnet-4.5`` is ``claude-sonnet-4-5``);
2. a known id or alias (``sonnet``, ``claude-opus-5-5``, dated ids);
3. a dated form of a known id (``claude-opus-5-5-20261101``) is that model,
   and the CLI receives the dated id as given;
4. any other well-formed Claude model id (``claude-<name>``) is passed to the
   CLI, which decides: an id the upstream does not know fails the turn with
   ``model_not_found``.

Anything else (``gpt-4o``, text with spaces) is refused at once with 404
``model_not_found``, without starting a turn.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Any

from ccgate.errors import ModelNotFound

__all__ = ["Catalogue", "CliModel", "ModelInfo", "Price"]

#: A Claude model id ccgate passes on without knowing it.
_CLAUDE_ID = re.compile(r"^claude-[a-z0-9](?:[a-z0-9-]{0,94}[a-z0-9])?(?:\[1m\])?$")
#: A date suffix of a snapshot id (``-20250929``) or its Vertex form (``@20250929``).
_DATED = re.compile(r"^(?P<base>.+?)[-@](?P<date>20\d{6})$")
_DOTTED_VERSION = re.compile(r"(\d)\.(\d)")
_FAMILY = re.compile(r"^claude-(?P<family>[a-z]+)")


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens."""

    input: float
    output: float
    cache_read: float
    cache_write: float

    @classmethod
    def of(cls, input: float, output: float, **cache: float) -> Price:
        """Return a price; cache reads default to 10 % of input, cache writes to 125 %."""
        return cls(
            input=input,
            output=output,
            cache_read=cache.get("cache_read", round(input * 0.1, 6)),
            cache_write=cache.get("cache_write", round(input * 1.25, 6)),
        )


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """One model ccgate offers.

    ``id`` is the model's canonical id (the ledger records it); ``cli`` is what
    Claude Code's ``--model`` receives. ``current`` marks the models the CLI
    offers today (listed first); ``known`` is False for an id passed on
    unverified.
    """

    id: str
    cli: str
    display_name: str
    created: int
    aliases: tuple[str, ...]
    context_window: int
    max_output: int
    price: Price
    family: str = ""
    current: bool = False
    known: bool = True
    #: Where the CLI lists a current model (its order is kept).
    rank: int = 0


@dataclass(frozen=True, slots=True)
class CliModel:
    """One entry of the CLI's own model list (its ``initialize`` answer)."""

    #: The name the CLI offers (``opus``, ``default``...).
    value: str
    #: The model id that name stands for today.
    resolved: str
    display_name: str = ""
    price: Price | None = None


@dataclass
class _Entry:
    model: ModelInfo
    names: set[str] = field(default_factory=set)


class Catalogue:
    """Resolve the names clients use; list current models first."""

    def __init__(self, models: list[ModelInfo], prefixes: tuple[str, ...]) -> None:
        self._prefixes = tuple(sorted(prefixes, key=len, reverse=True))
        self._models: dict[str, ModelInfo] = {}
        self._index: dict[str, str] = {}
        for model in models:
            self._add(model)

    @classmethod
    def load(cls, *, now: float | None = None) -> Catalogue:
        """Read the packaged ``models.json``.

        A model without a known release date reports ``now`` (default: the time of
        loading) as its ``created``, when ccgate first saw it.
        """
        raw = json.loads(resources.files("ccgate.engine").joinpath("models.json").read_text())
        seen = int(time.time() if now is None else now)
        models = [replace(_from_json(m, seen), rank=i) for i, m in enumerate(raw["models"])]
        return cls(models, tuple(raw.get("provider_prefixes", ())))

    # -- what the CLI says ------------------------------------------------------------

    def adopt(self, entries: list[CliModel], *, seen_at: int = 0) -> None:
        """Take the CLI's own list: its aliases win, its models become the current ones.

        Models the CLI no longer lists stay resolvable (by id) but are not current.
        """
        if not entries:
            return
        for model_id, model in list(self._models.items()):
            if model.current:
                self._models[model_id] = replace(model, current=False)
        adopted: set[str] = set()
        for entry in entries:
            resolved = entry.resolved.strip().lower()
            if not resolved:
                continue
            if resolved not in adopted:
                adopted.add(resolved)
                base = self._models.get(resolved) or self._guess(resolved, seen_at)
                self._add(
                    replace(
                        base,
                        current=True,
                        known=True,
                        rank=len(adopted),
                        display_name=_display(entry, base),
                        price=entry.price or base.price,
                        created=base.created or seen_at,
                    )
                )
            alias = entry.value.strip().lower()
            if alias and alias != resolved:
                self._alias(alias, resolved)

    # -- resolution -------------------------------------------------------------------

    def resolve(self, name: str) -> ModelInfo:
        """Return the model ``name`` refers to, or raise :class:`NotFound`."""
        key = self._normal(name)
        model_id = self._index.get(key)
        if model_id is not None:
            return self._models[model_id]
        dated = _DATED.match(key)
        if dated is not None:
            base = self._index.get(dated["base"])
            if base is not None:
                return replace(self._models[base], cli=key)
        if _CLAUDE_ID.match(key):
            return self._guess(key, self._default().created)
        raise ModelNotFound(
            f"The model '{_shown(name)}' does not exist or is not offered by this gateway. "
            f"Use a Claude model id or alias such as {', '.join(self._examples())} "
            "(GET /v1/models lists them)."
        )

    @property
    def models(self) -> list[ModelInfo]:
        """Return every known model: the CLI's current ones first, then newest first."""
        return sorted(
            self._models.values(), key=lambda m: (not m.current, m.rank, -m.created, m.id)
        )

    def listing(self) -> list[tuple[str, ModelInfo]]:
        """Return ``(listed id, model)`` for ``/v1/models``: current models, their family
        aliases, then the rest."""
        current = [m for m in self.models if m.current]
        rest = [m for m in self.models if not m.current]
        aliases = [(m.family, m) for m in current if m.family and self._index.get(m.family) == m.id]
        return [(m.id, m) for m in current] + aliases + [(m.id, m) for m in rest]

    # -- internals --------------------------------------------------------------------

    def _normal(self, name: str) -> str:
        key = name.strip().lower()
        for prefix in self._prefixes:
            if key.startswith(prefix):
                key = key[len(prefix) :]
                break
        return _DOTTED_VERSION.sub(r"\1-\2", key)

    def _add(self, model: ModelInfo) -> None:
        self._models[model.id] = model
        self._index[model.id] = model.id
        for alias in model.aliases:
            self._alias(alias, model.id)

    def _alias(self, alias: str, model_id: str) -> None:
        self._index[alias.lower()] = model_id
        model = self._models[model_id]
        if alias not in model.aliases and alias != model_id:
            self._models[model_id] = replace(model, aliases=(*model.aliases, alias))
        # An alias moved to another model leaves the old one's list.
        for other_id, other in self._models.items():
            if other_id != model_id and alias in other.aliases:
                kept = tuple(a for a in other.aliases if a != alias)
                self._models[other_id] = replace(other, aliases=kept)

    def _guess(self, model_id: str, created: int) -> ModelInfo:
        """Return a model for an id not in the catalogue, priced like its family's current one."""
        found = _FAMILY.match(model_id)
        family = found["family"] if found else ""
        like = next((m for m in self.models if m.family == family), None) or self._default()
        return ModelInfo(
            id=model_id,
            cli=model_id,
            display_name=model_id,
            created=created,
            aliases=(),
            context_window=like.context_window,
            max_output=like.max_output,
            price=like.price,
            family=family,
            known=False,
        )

    def _default(self) -> ModelInfo:
        return self.models[0]

    def _examples(self) -> list[str]:
        return [m.id for m in self.models if m.current][:4] + ["sonnet"]


def _from_json(raw: dict[str, Any], seen: int) -> ModelInfo:
    return ModelInfo(
        id=raw["id"],
        cli=raw.get("cli", raw["id"]),
        display_name=raw["display_name"],
        created=int(raw.get("created") or seen),
        aliases=tuple(raw.get("aliases", ())),
        context_window=int(raw["context_window"]),
        max_output=int(raw["max_output"]),
        price=Price.of(**raw["price"]),
        family=raw.get("family", ""),
        current=bool(raw.get("current", False)),
    )


def _display(entry: CliModel, base: ModelInfo) -> str:
    if base.known and base.display_name and base.display_name != base.id:
        return base.display_name
    return entry.display_name or base.display_name


def _shown(name: str) -> str:
    """Return a client's model name fit for an error message (printable, bounded)."""
    printable = "".join(c if c.isprintable() else "?" for c in name)
    return printable if len(printable) <= 80 else printable[:77] + "..."
