"""What every CLI process of ccgate (and every command an agent runs) has in its environment.

A CLI of ccgate serves whoever sent the request or the loop's messages, not
the operator who started ccgate, so it gets an environment made for it, the
same for the compatible APIs and for loops:

- of ccgate's own environment only what programs need to run (``PATH``,
  ``HOME``, locale, terminal, certificate bundles, proxies, toolchain
  locations) is kept; everything else (``GITHUB_TOKEN``, cloud credentials,
  ``OPENAI_API_KEY``, ``ANTHROPIC_AUTH_TOKEN``, ccgate's settings) is blanked;
- the upstream credential is not in it: it reaches the CLI through a file only
  the launcher reads (``claude.launcher``), as an API key (ccgate's
  ``upstream_api_key`` or the operator's ``ANTHROPIC_API_KEY``) or an OAuth
  token (``CLAUDE_CODE_OAUTH_TOKEN``), and the CLI reads it from descriptor 3;
  a ``claude login`` is found in the CLI's config dir, which no command can
  read. The one exception is a compatible-API turn with an API key: Claude
  Code's minimal mode (``claude.fidelity``) takes an API key only from
  ``ANTHROPIC_API_KEY``, so the launcher sets it from the file for the CLI
  alone; that CLI runs no tools and so no command that could read it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ccgate.claude.launcher import CREDENTIAL_FD

__all__ = [
    "KEPT_VARIABLES",
    "Credential",
    "agent_credential",
    "cli_environment",
]

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
        # how the CLI reaches its upstream from behind a proxy
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
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
    """The upstream credential of a CLI and the CLI variable naming its descriptor."""

    value: str
    descriptor_variable: str

    def __repr__(self) -> str:
        return f"Credential(descriptor_variable={self.descriptor_variable!r})"

    @property
    def is_api_key(self) -> bool:
        """Tell whether this is an API key (not an OAuth token)."""
        return self.descriptor_variable == "CLAUDE_CODE_API_KEY_FILE_DESCRIPTOR"


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


def cli_environment(
    environ: Mapping[str, str], credential: Credential | None, *, key_variable: bool = False
) -> dict[str, str]:
    """Return overrides that blank every variable a CLI of ccgate must not have.

    The SDK starts the CLI with the parent's environment plus these overrides,
    so blanking (not omitting) is what keeps a value out. With ``key_variable``
    an API key reaches the CLI as ``ANTHROPIC_API_KEY``, set by the launcher
    from the credential file; otherwise the CLI reads the credential from its
    descriptor.
    """
    env = {
        name: ""
        for name in environ
        if name not in KEPT_VARIABLES and not name.startswith(_KEPT_PREFIXES)
    }
    if credential is not None:
        if key_variable and credential.is_api_key:
            env["CCGATE_CREDENTIAL_AS"] = "ANTHROPIC_API_KEY"
        else:
            env[credential.descriptor_variable] = str(CREDENTIAL_FD)
    return env
