"""``python -m bench.accounts --quick`` runs: a smoke test of the accounts benchmark.

The benchmark runs in this process (no server, no CLI), so it is called through its
``main(argv)``. It must return 0 and print its figure lines; what they say is never asserted.
"""

from __future__ import annotations

import pytest

from bench import accounts


def lines_with(out: str, text: str) -> list[str]:
    """Return the lines of ``out`` that contain ``text``."""
    return [line for line in out.splitlines() if text in line]


@pytest.mark.unit
def test_accounts(capsys: pytest.CaptureFixture[str]) -> None:
    assert accounts.main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert lines_with(out, "1. routing cost")
    assert lines_with(out, "choose/min ratio")
    for size in (1, 3, 10):
        for conversation in ("new", "sticky"):
            assert lines_with(out, f"{size} accounts, {conversation} "), (size, conversation)
    assert lines_with(out, "2. a simulated day")
    # the day's table: policy, served, refused, refused w/ headroom, ..., prefix reuse, ...
    policies = {
        line.split()[0] for line in out.splitlines() if line.split()[:1] in (["ccgate"], ["random"])
    }
    assert policies == {"ccgate", "random"}
    assert lines_with(out, "prefix reuse ccgate / random")
    assert lines_with(out, "refused while an account had headroom")
    assert len(lines_with(out, "meter news, ")) == 2
