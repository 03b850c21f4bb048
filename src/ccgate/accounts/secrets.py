"""Upstream credentials encrypted at rest.

An account's secret (an OAuth token or an API key) is stored encrypted with
AES-256-GCM: ``v1:`` and the base64 of a random 12-byte nonce followed by the
ciphertext. The key is the setting ``accounts_key`` when set (any text; its
SHA-256 is the key), else a random key ccgate writes once to
``<data_dir>/accounts.key`` (mode 0600). A database copied without that file
holds no usable credential; losing the file loses the stored secrets (add the
accounts again).
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ccgate.errors import ConfigError

__all__ = ["KEY_FILE", "SecretBox", "hint"]

#: The key file's name in the data dir.
KEY_FILE = "accounts.key"
_PREFIX = "v1:"
_CONTEXT = b"ccgate upstream account"


def hint(secret: str) -> str:
    """Return what tells a person which credential this is, without giving it away."""
    if len(secret) < 24:
        return "…" + secret[-2:] if len(secret) > 8 else "…"
    head = secret[:13] if secret.startswith("sk-ant-") else secret[:4]
    return f"{head}…{secret[-4:]}"


class SecretBox:
    """Encrypt and decrypt account secrets with one key; see the module docstring."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("an account key is 32 bytes")
        self._aead = AESGCM(key)

    @classmethod
    def from_setting(cls, text: str) -> SecretBox:
        """Return the box keyed by the ``accounts_key`` setting."""
        return cls(hashlib.sha256(text.encode()).digest())

    @classmethod
    def from_data_dir(cls, data_dir: Path) -> SecretBox:
        """Return the box keyed by ``<data_dir>/accounts.key``, written (0600) when missing."""
        path = data_dir / KEY_FILE
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
        try:
            key = base64.b64decode(path.read_text().strip(), validate=True)
        except ValueError as exc:
            raise ConfigError(f"{path} is not an account key (base64 of 32 bytes)") from exc
        if len(key) != 32:
            raise ConfigError(f"{path} is not an account key (base64 of 32 bytes)")
        return cls(key)

    def seal(self, secret: str) -> str:
        """Return ``secret`` encrypted, as stored."""
        nonce = secrets.token_bytes(12)
        sealed = self._aead.encrypt(nonce, secret.encode(), _CONTEXT)
        return _PREFIX + base64.b64encode(nonce + sealed).decode()

    def open(self, stored: str) -> str:
        """Return the secret ``seal`` made; ConfigError when this key did not make it."""
        if not stored.startswith(_PREFIX):
            raise ConfigError("a stored account secret is not in ccgate's format")
        raw = base64.b64decode(stored[len(_PREFIX) :])
        try:
            return self._aead.decrypt(raw[:12], raw[12:], _CONTEXT).decode()
        except InvalidTag as exc:
            raise ConfigError(
                "a stored account secret cannot be decrypted with this key: the data dir's "
                f"{KEY_FILE} or the accounts_key setting changed; add the account again"
            ) from exc
