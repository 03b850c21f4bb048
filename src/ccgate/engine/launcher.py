"""Start the Claude Code CLI so that it cannot outlive ccgate.

A CLI whose ccgate is killed (``kill -9``, an OOM kill) notices only when it next
reads its input, and meanwhile goes on by itself: a turn waiting for a client
tool's result is answered "interrupted" and sent to the model once more, a
billed request nobody reads. On Linux, ``setpriv --pdeathsig KILL`` makes the
kernel kill the CLI the moment ccgate dies. The launcher is a two-line shell
script in the data dir that ``exec``s into the CLI (same pid, same arguments,
same environment); elsewhere the CLI is started as it is.
"""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path

__all__ = ["tethered"]


def tethered(cli: Path | None, data_dir: Path) -> Path | None:
    """Return a launcher for ``cli`` that dies with this process, or ``cli`` where there is none."""
    setpriv = shutil.which("setpriv")
    if cli is None or setpriv is None or not sys.platform.startswith("linux"):
        return cli
    launcher = data_dir.expanduser() / "bin" / "claude"
    script = (
        "#!/bin/sh\n"
        "# Written by ccgate: run Claude Code so that it dies with the ccgate that started it.\n"
        f'exec {shlex.quote(setpriv)} --pdeathsig KILL -- {shlex.quote(str(cli))} "$@"\n'
    )
    launcher.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not launcher.exists() or launcher.read_text() != script:
        tmp = launcher.with_suffix(".tmp")
        tmp.write_text(script)
        tmp.chmod(0o700)
        tmp.replace(launcher)
    return launcher
