"""What an agent's Claude Code process, and so every command it runs, has in its environment.

Commands of a loop run on behalf of whoever sent the loop's messages, not of
the operator who started ccgate, so they see an environment made for them:

- of ccgate's own environment only what programs need to run (``PATH``,
  ``HOME``, locale, terminal, certificate bundles, toolchain locations) is
  kept; everything else (``GITHUB_TOKEN``, cloud credentials, ccgate's
  settings) is blanked;
- the upstream credential is not in it at all: it reaches the CLI on a
  descriptor (``engine.launcher``), as an API key (ccgate's
  ``upstream_api_key`` or the operator's ``ANTHROPIC_API_KEY``) or an OAuth
  token (``CLAUDE_CODE_OAUTH_TOKEN``); a ``claude login`` is found in the
  CLI's config dir, which no command can read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ccgate.engine.launcher import CREDENTIAL_FD

__all__ = ["KEPT_VARIABLES", "Credential", "agent_environment", "agent_credential"]

#: Variables of ccgate's environment an agent's commands keep.
KEPT_VARIABLES = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "LANG",
        "LANGUAGE",
        "TERM",
        "TZ",
        "COLORTERM",
        "NO_COLOR",
        # certificate bundles
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "NODE_EXTRA_CA_CERTS",
        # where toolchains live
        "PYENV_ROOT",
        "VIRTUAL_ENV",
        "NVM_DIR",
        "CARGO_HOME",
        "RUSTUP_HOME",
        "GOPATH",
        "GOROOT",
        "JAVA_HOME",
        "LD_LIBRARY_PATH",
        "PKG_CONFIG_PATH",
        # where the CLI finds its upstream (not a secret)
        "ANTHROPIC_BASE_URL",
    }
)
_KEPT_PREFIXES = ("LC_",)


@dataclass(frozen=True, slots=True)
class Credential:
    """The upstream credential of an agent and the CLI variable naming its descriptor."""

    value: str
    descriptor_variable: str

    def __repr__(self) -> str:
        return f"Credential(descriptor_variable={self.descriptor_variable!r})"


def agent_credential(upstream_api_key: str | None, environ: Mapping[str, str]) -> Credential | None:
    """Return the credential an agent's CLI is to use, or ``None`` for the CLI's own login."""
    if upstream_api_key:
        return Credential(upstream_api_key, "CLAUDE_CODE_API_KEY_FILE_DESCRIPTOR")
    if environ.get("ANTHROPIC_API_KEY"):
        return Credential(environ["ANTHROPIC_API_KEY"], "CLAUDE_CODE_API_KEY_FILE_DESCRIPTOR")
    if environ.get("CLAUDE_CODE_OAUTH_TOKEN"):
        return Credential(
            environ["CLAUDE_CODE_OAUTH_TOKEN"], "CLAUDE_CODE_OAUTH_TOKEN_FILE_DESCRIPTOR"
        )
    return None


def agent_environment(environ: Mapping[str, str], credential: Credential | None) -> dict[str, str]:
    """Return overrides that blank every variable an agent must not have.

    The SDK starts the CLI with the parent's environment plus these overrides,
    so blanking (not omitting) is what keeps a value out.
    """
    env = {
        name: ""
        for name in environ
        if name not in KEPT_VARIABLES and not name.startswith(_KEPT_PREFIXES)
    }
    if credential is not None:
        env[credential.descriptor_variable] = str(CREDENTIAL_FD)
    return env
