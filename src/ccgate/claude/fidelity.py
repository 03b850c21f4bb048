"""Keep a compatible-API turn to what the client sent: the levers Claude Code offers.

Left to itself, Claude Code adds to every request of a plain chat turn (CLI
2.1.332, measured against the scripted model):

================================================  =========================================
What the CLI adds on its own                      Lever ccgate sets
================================================  =========================================
adaptive thinking (``thinking: adaptive``),       ``CLAUDE_CODE_DISABLE_THINKING=1`` unless
slower and billed                                 the client asked for thinking
``output_config.effort: medium``                  ``CLAUDE_CODE_EFFORT_LEVEL=unset``, or the
                                                  client's own effort
``<system-reminder><total_tokens>…``              ``CLAUDE_CODE_TOTAL_TOKENS_REMINDER=off``
after each tool result (pinned model ids)
an inline ``# Environment`` system message        minimal mode (``CLAUDE_CODE_SIMPLE=1``, the
(working directory, OS, date, model identity,     CLI's ``--bare``), with an API key only:
advice about curl and untrusted downloads)        minimal mode reads no OAuth token or login
================================================  =========================================

What stays, and why:

- the ``x-anthropic-billing-header`` system block (Claude Code's attribution of
  its own traffic; a subscription's requests are recognised by it);
- the identity line "You are a Claude agent, built on Anthropic's Claude Agent
  SDK." (the CLI always sends one of its identity lines; it has no switch);
- with a subscription (OAuth token or ``claude /login``) the ``# Environment``
  message, because minimal mode refuses those credentials; the working
  directory it names is ccgate's empty neutral one (``<data_dir>/cwd``).

``bench/fidelity.py`` measures what remains, in tokens, per request.
"""

from __future__ import annotations

from ccgate.engine.turn import Effort, Thinking

__all__ = ["fidelity_env", "thinking_option"]


def fidelity_env(
    thinking: Thinking | None, effort: Effort | None, *, minimal: bool
) -> dict[str, str]:
    """Return the variables that keep the CLI from adding what the client did not ask for.

    ``minimal`` runs the CLI in its minimal mode (only with an API key).
    """
    env = {
        "CLAUDE_CODE_TOTAL_TOKENS_REMINDER": "off",
        "CLAUDE_CODE_EFFORT_LEVEL": effort or "unset",
    }
    if thinking is None:
        env["CLAUDE_CODE_DISABLE_THINKING"] = "1"
    if minimal:
        env["CLAUDE_CODE_SIMPLE"] = "1"
    return env


def thinking_option(thinking: Thinking | None) -> dict[str, object] | None:
    """Return the SDK's ``thinking`` option for what the client asked (shown unless omitted)."""
    if thinking is None:
        return None
    if thinking.budget_tokens is None:
        return {"type": "adaptive", "display": thinking.display}
    return {
        "type": "enabled",
        "budget_tokens": thinking.budget_tokens,
        "display": thinking.display,
    }
