"""``ccgate sessions list|rm``: manage conversation sessions in the database directly."""

from __future__ import annotations

import os
import sys
import time

from ccgate.claude import ClaudeRunner
from ccgate.config import Settings
from ccgate.engine.sessions import ConversationSessions
from ccgate.gateway import runner_config
from ccgate.store.database import Database
from ccgate.store.sessions import SqlSessionStore

__all__ = ["default_namespace", "run_sessions"]


async def _nothing_waits(session_id: str) -> None:
    """No turn of this command waits for tool results: there is nothing to supersede."""


def default_namespace(settings: Settings) -> str:
    """Return the namespace requests get in the configured auth mode."""
    return "shared" if settings.auth_mode == "shared" else "local"


async def run_sessions(
    settings: Settings, action: str, namespace: str | None, key: str | None, everything: bool
) -> int:
    """Run one sessions command; return the exit code."""
    if namespace is None and settings.auth_mode == "multi":
        print(
            "ccgate: with auth_mode=multi every key has its own sessions: give --namespace "
            "KEY_ID (ccgate keys list shows the ids)",
            file=sys.stderr,
        )
        return 2
    ns = namespace or default_namespace(settings)
    database = Database(settings.effective_database_url)
    try:
        await database.migrate()
        # The sessions' Claude Code transcripts go with them: the runner knows where they are.
        states = ClaudeRunner(runner_config(settings, None, None, os.environ))
        sessions = ConversationSessions(SqlSessionStore(database), states, supersede=_nothing_waits)
        if action == "list":
            records = await sessions.list_sessions(ns)
            if not records:
                print(f"no sessions in namespace '{ns}'")
                return 0
            now = time.time()
            print(f"{'KEY':<40} {'MODEL':<18} {'TURNS':>5} {'IDLE':>8} {'TOKENS in/out':>16}")
            for r in records:
                idle = f"{int(now - r.last_used_at)}s"
                tokens = f"{r.input_tokens}/{r.output_tokens}"
                print(f"{r.key:<40} {r.model:<18} {r.turns:>5} {idle:>8} {tokens:>16}")
            return 0
        if everything:
            gone = await sessions.delete(ns, None)
            print(f"removed {len(gone)} session(s) from namespace '{ns}'")
            return 0
        if key is None:
            print("ccgate: sessions rm needs a KEY or --all", file=sys.stderr)
            return 2
        removed = await sessions.delete(ns, key)
        if not removed:
            print(f"ccgate: no session '{key}' in namespace '{ns}'", file=sys.stderr)
            return 1
        print(f"removed session '{key}'")
        return 0
    finally:
        await database.close()
