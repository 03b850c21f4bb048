"""Start the Claude Code CLI so that it cannot outlive ccgate, and hand it its credential.

A CLI whose ccgate is killed (``kill -9``, an OOM kill) notices only when it next
reads its input, and meanwhile goes on by itself: a turn waiting for a client
tool's result is answered "interrupted" and sent to the model once more, a
billed request nobody reads. On Linux, ``setpriv --pdeathsig KILL`` makes the
kernel kill the CLI the moment ccgate dies.

An agent's CLI runs commands, and a command inherits the CLI's environment, so
a credential never travels in the environment ccgate gives a CLI: ccgate
writes it to a file of its own (mode 0600, in the data dir no command can
read) and names that file in ``CCGATE_CREDENTIAL_FILE``; the launcher opens it
as descriptor 3, deletes it, and the CLI reads the credential from the
descriptor (``CLAUDE_CODE_API_KEY_FILE_DESCRIPTOR`` or
``CLAUDE_CODE_OAUTH_TOKEN_FILE_DESCRIPTOR``). The CLI does not pass descriptor
3 on to the commands it runs. With ``CCGATE_CREDENTIAL_AS=ANTHROPIC_API_KEY``
(a compatible-API turn in Claude Code's minimal mode, which reads an API key
from nowhere else, and which runs no commands) the launcher puts the file's
content in that variable of the CLI instead.

The launcher is a short shell script in the data dir that ``exec``s into the
CLI (same pid, same arguments, same environment otherwise).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import shutil
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "CREDENTIAL_FD",
    "clear_credential_files",
    "credential_file",
    "reap_orphans",
    "tethered",
]

#: The descriptor on which the launcher hands the CLI its credential.
CREDENTIAL_FD = 3


def tethered(cli: Path | None, data_dir: Path) -> Path | None:
    """Return a launcher for ``cli`` (dies with this process on Linux), or ``cli`` without sh."""
    shell = shutil.which("sh")
    if cli is None or shell is None or sys.platform == "win32":
        return cli
    setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    tether = f"{shlex.quote(setpriv)} --pdeathsig KILL -- " if setpriv else ""
    script = (
        "#!/bin/sh\n"
        "# Written by ccgate: run Claude Code so that it dies with the ccgate that started it,\n"
        "# with its credential (if any) on a descriptor instead of in its environment.\n"
        'if [ -n "${CCGATE_CREDENTIAL_FILE:-}" ]; then\n'
        '  if [ "${CCGATE_CREDENTIAL_AS:-}" = ANTHROPIC_API_KEY ]; then\n'
        '    ANTHROPIC_API_KEY=$(cat -- "$CCGATE_CREDENTIAL_FILE") || exit 70\n'
        "    export ANTHROPIC_API_KEY\n"
        "  else\n"
        f'    exec {CREDENTIAL_FD}<"$CCGATE_CREDENTIAL_FILE" || exit 70\n'
        "  fi\n"
        '  rm -f -- "$CCGATE_CREDENTIAL_FILE"\n'
        "fi\n"
        "unset CCGATE_CREDENTIAL_FILE CCGATE_CREDENTIAL_AS\n"
        f'exec {tether}{shlex.quote(str(cli))} "$@"\n'
    )
    launcher = data_dir.expanduser() / "bin" / "claude"
    launcher.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not launcher.exists() or launcher.read_text() != script:
        tmp = launcher.with_suffix(".tmp")
        tmp.write_text(script)
        tmp.chmod(0o700)
        tmp.replace(launcher)
    return launcher


@contextmanager
def credential_file(data_dir: Path, value: str) -> Iterator[Path]:
    """Write ``value`` to a new file only this user can read; remove it on exit at the latest.

    The launcher deletes the file as soon as it has opened it; this is the
    cleanup for a CLI that never started.
    """
    folder = data_dir.expanduser() / "run"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / f"credential-{secrets.token_hex(8)}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(value)
        yield path
    finally:
        path.unlink(missing_ok=True)


def clear_credential_files(data_dir: Path) -> None:
    """Remove credential files a killed ccgate left behind."""
    folder = data_dir.expanduser() / "run"
    for path in folder.glob("credential-*") if folder.is_dir() else ():
        path.unlink(missing_ok=True)


def reap_orphans(data_dir: Path) -> list[int]:
    """Kill what a killed ccgate's Claude Code processes left running; return their pids.

    The kernel kills a CLI when its ccgate dies (``--pdeathsig``), but not what
    that CLI started: a loop's sandbox keeps a ``socat`` proxy, say, which the
    CLI would have stopped had it exited by itself. Such a process was made with
    this data dir's config dir in its environment and, its CLI gone, is now a
    child of init (parent 1): those, and only those, are killed (Linux only).
    """
    proc = Path("/proc")
    if not sys.platform.startswith("linux") or not proc.is_dir():
        return []
    marker = f"CLAUDE_CONFIG_DIR={data_dir.expanduser()}".encode()
    reaped = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            stat = (entry / "stat").read_text()
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if len(fields) < 2 or fields[0] == "Z" or fields[1] != "1":
            continue
        if any(var.startswith(marker) for var in environ.split(b"\0")):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), signal.SIGKILL)
                reaped.append(int(entry.name))
    return reaped
