"""What every Claude Code process of ccgate is launched with: config dir, credential, environment.

The compatible APIs' runner and the loops' agents start their CLIs alike:

- a ``CLAUDE_CONFIG_DIR`` slot of their own (:class:`~ccgate.claude.workdirs.WorkerDirs`);
- the upstream credential in a file only the launcher reads
  (``claude.launcher``), never in the environment ccgate gives them;
- an allow-listed environment (``claude.environment``), Claude Code's settings
  for a gateway (no nonessential traffic, no auto-updater or telemetry, the
  retries ccgate allows), the upstream's URL and any ``extra_env``;
- the launcher script that ties the CLI's life to ccgate's.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from ccgate.claude.binary import find_cli
from ccgate.claude.environment import Credential, agent_credential, cli_environment
from ccgate.claude.launcher import credential_file, tethered
from ccgate.claude.process import RunnerConfig, cli_settings_env
from ccgate.claude.workdirs import WorkerDirs

__all__ = ["Launch"]


class Launch:
    """How to start a CLI for ``config``, with config dirs from ``dirs``."""

    def __init__(self, config: RunnerConfig, dirs: WorkerDirs) -> None:
        self.config = config
        self.dirs = dirs
        #: The upstream credential (``None``: the CLI's own login in its config dir).
        self.credential: Credential | None = (
            config.credential
            if config.account
            else agent_credential(config.upstream_api_key, config.environ)
        )
        self._cli: Path | None = None

    def cli_path(self) -> Path | None:
        """Return the launcher of the CLI (written once), or the CLI itself without one."""
        if self._cli is None:
            self._cli = tethered(find_cli(self.config.cli_path), self.config.data_dir)
        return self._cli or self.config.cli_path

    def lease(self, stack: contextlib.ExitStack) -> tuple[Path, Path | None]:
        """Take a config dir and write the credential file for one CLI (both end with ``stack``)."""
        workdir = stack.enter_context(self.dirs.lease())
        secret = self.credential
        if secret is None:
            return workdir, None
        return workdir, stack.enter_context(credential_file(self.config.data_dir, secret.value))

    def environment(
        self, workdir: Path, credential_path: Path | None, *, key_variable: bool = False
    ) -> dict[str, str]:
        """Return the environment overrides of a CLI on config dir ``workdir``.

        ``key_variable``: an API key reaches the CLI as ``ANTHROPIC_API_KEY`` (set by
        the launcher; Claude Code's minimal mode reads it nowhere else).
        """
        env = cli_environment(self.config.environ, self.credential, key_variable=key_variable)
        if credential_path is not None:
            env["CCGATE_CREDENTIAL_FILE"] = str(credential_path)
        env.update(cli_settings_env(workdir, self.config))
        if self.config.upstream_url:
            env["ANTHROPIC_BASE_URL"] = self.config.upstream_url
        return env
