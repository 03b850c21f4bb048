"""The model catalogue: one data file of models and aliases (``models.json``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

from ccgate.errors import NotFound

__all__ = ["Catalogue", "ModelInfo", "Price"]


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens."""

    input: float
    output: float
    cache_read: float
    cache_write: float


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """One model ccgate offers."""

    id: str
    cli: str
    display_name: str
    created: int
    aliases: tuple[str, ...]
    context_window: int
    max_output: int
    price: Price


class Catalogue:
    """Resolve the names clients use (ids, aliases, dated and provider-prefixed names)."""

    def __init__(self, models: list[ModelInfo], prefixes: tuple[str, ...]) -> None:
        self.models = models
        self._prefixes = prefixes
        self._index: dict[str, ModelInfo] = {}
        for model in models:
            for name in (model.id, *model.aliases):
                self._index[name.lower()] = model

    @classmethod
    def load(cls) -> Catalogue:
        """Read the packaged ``models.json``."""
        raw = json.loads(resources.files("ccgate.engine").joinpath("models.json").read_text())
        models = [
            ModelInfo(
                id=m["id"],
                cli=m["cli"],
                display_name=m["display_name"],
                created=int(m["created"]),
                aliases=tuple(m.get("aliases", ())),
                context_window=int(m["context_window"]),
                max_output=int(m["max_output"]),
                price=Price(**m["price"]),
            )
            for m in raw["models"]
        ]
        return cls(models, tuple(raw.get("provider_prefixes", ())))

    def resolve(self, name: str) -> ModelInfo:
        """Return the model ``name`` refers to, or raise :class:`NotFound`."""
        key = name.strip().lower()
        for prefix in self._prefixes:
            if key.startswith(prefix):
                key = key[len(prefix) :]
                break
        model = self._index.get(key)
        if model is None:
            known = ", ".join(m.id for m in self.models)
            raise NotFound(
                f"The model '{name}' does not exist or is not offered by this gateway. "
                f"Known models: {known} (GET /v1/models lists them with their aliases).",
                param="model",
                code="model_not_found",
            )
        return model
