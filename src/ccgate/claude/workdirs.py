"""Per-worker Claude Code config dirs and the neutral working directory."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

__all__ = ["WorkerDirs", "user_credentials"]


def user_credentials(environ: dict[str, str] | None = None) -> Path:
    """Return where the operator's own Claude Code login is stored."""
    env = environ if environ is not None else dict(os.environ)
    base = (
        Path(env["CLAUDE_CONFIG_DIR"]) if env.get("CLAUDE_CONFIG_DIR") else Path.home() / ".claude"
    )
    return base.expanduser() / ".credentials.json"


class WorkerDirs:
    """Hand out ``CLAUDE_CONFIG_DIR`` slots so no two live CLIs share one.

    Concurrent CLIs writing one config file corrupt it, so each live process
    leases a slot directory of its own; a slot is reused after release. The
    slots share one ``projects/`` (session transcripts, one file per session). The
    operator's login (``.credentials.json``) is linked into each slot so a
    ``claude login`` done once serves every worker.
    """

    def __init__(self, data_dir: Path, *, account: str = "", login: bool = True) -> None:
        """``account`` gets slots of its own; ``login``: link the operator's login into them
        (only for the account that runs on that login: no other account's CLI may read it)."""
        root = data_dir.expanduser() / "workers"
        self._root = root / account if account else root
        self._login = login
        self.neutral_cwd = data_dir.expanduser() / "cwd"
        #: Session transcripts, shared by every slot so any worker can resume any session.
        self.projects = data_dir.expanduser() / "projects"
        self._free: list[int] = []
        self._next = 0
        self._lock = threading.Lock()

    @contextmanager
    def lease(self) -> Iterator[Path]:
        """Lease a slot directory for one CLI process."""
        with self._lock:
            slot = self._free.pop() if self._free else self._take_next()
        path = self._root / f"w{slot}"
        try:
            self._prepare(path)
            yield path
        finally:
            with self._lock:
                self._free.append(slot)

    def _take_next(self) -> int:
        slot = self._next
        self._next += 1
        return slot

    def _prepare(self, path: Path) -> None:
        for directory in (self._root, path, self.neutral_cwd, self.projects):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        shared = path / "projects"
        if not shared.is_symlink():
            if shared.exists():
                shutil.rmtree(shared)
            shared.symlink_to(self.projects, target_is_directory=True)
        creds = user_credentials()
        link = path / ".credentials.json"
        if not self._login:
            if link.is_symlink():
                link.unlink()
            return
        if creds.is_file() and not link.exists() and creds.parent != path:
            with suppress(FileExistsError):
                link.symlink_to(creds)
