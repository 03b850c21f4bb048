"""The Claude Code runner: turns run by the real CLI through ``claude-agent-sdk``.

This package is the only place that imports ``claude_agent_sdk``:
``runner`` runs the compatible APIs' turns, ``translate`` turns the SDK's
messages into neutral events, ``process`` holds what every CLI process shares.
"""

from ccgate.claude.process import RunnerConfig
from ccgate.claude.runner import ClaudeRunner
from ccgate.claude.translate import Translator

__all__ = ["ClaudeRunner", "RunnerConfig", "Translator"]
