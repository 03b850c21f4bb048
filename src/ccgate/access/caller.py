"""Who is asking: the caller of a request, and what its key lets it use."""

from __future__ import annotations

from dataclasses import dataclass

from ccgate.engine.models import ModelInfo
from ccgate.errors import PermissionDenied
from ccgate.store.keys import KeyRecord

__all__ = ["Caller"]


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking: a namespace (``local``, ``shared`` or a key's id) and its key, if any."""

    namespace: str
    key: KeyRecord | None = None

    @property
    def name(self) -> str:
        """Return the caller's name for people (the key's name, else the namespace)."""
        return self.key.name if self.key is not None else self.namespace

    def check_model(self, model: ModelInfo) -> None:
        """Refuse a model outside the key's list with 403."""
        allowed = self.key.models if self.key is not None else None
        if allowed is not None and model.id not in allowed:
            raise PermissionDenied(
                f"this API key may not use the model '{model.id}'; it may use: "
                f"{', '.join(allowed) or 'no model'}",
                param="model",
                code="model_not_allowed",
            )
