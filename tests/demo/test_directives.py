"""Directive parsing: the grammar, and robustness against bad input."""

from __future__ import annotations

import pytest

from ccgate.demo.directives import parse_directives
from ccgate.demo.reply import ToolUse, reply_from_directives

pytestmark = pytest.mark.unit


def test_plain_text_has_no_directives() -> None:
    assert parse_directives("  hello world ") == ("hello world", [])


def test_pairs_of_every_value_kind() -> None:
    text, pairs = parse_directives(
        'hi [[demo: chunks=5 delay=0.05 say="a b ]] c" tool=t input={"x": [[1]]}]] there'
    )
    assert text == "hi  there"
    assert pairs == [
        ("chunks", 5),
        ("delay", 0.05),
        ("say", "a b ]] c"),
        ("tool", "t"),
        ("input", {"x": [[1]]}),
    ]


def test_several_directives_and_repeated_tools() -> None:
    _, pairs = parse_directives(
        '[[demo: tool=a input={"n":1}]] x [[demo: tool=b]] [[demo: thinking="hm"]]'
    )
    reply, times = reply_from_directives(pairs)
    assert reply.tool_uses == [ToolUse("a", {"n": 1}), ToolUse("b", {})]
    assert reply.thinking == "hm"
    assert times is None


@pytest.mark.parametrize(
    "text",
    [
        "[[demo: chunks=",
        '[[demo: say="unterminated',
        "[[demo: input={bad json}]]",
        "[[demo: =5]]",
        "[[demo: chunks=abc delay=-1 error=42 cut=-3 stall=nan stop=nope times=0]]",
        '[[demo: input={"a":1}]]',
        "[[demo:]]",
        "[[demo: chunks=99999999999999999999999]]",
    ],
)
def test_bad_directives_are_ignored(text: str) -> None:
    _, pairs = parse_directives(text)
    reply, times = reply_from_directives(pairs)
    assert reply.chunks == 1 and reply.delay == 0.0 and not reply.is_fault
    assert reply.tool_uses == [] and reply.stop_reason is None and times is None


def test_bad_pair_keeps_earlier_pairs_and_drops_the_rest() -> None:
    text, pairs = parse_directives('a [[demo: chunks=2 input={oops} say="x"]] b')
    assert text == "a  b"
    assert pairs == [("chunks", 2)]


def test_unterminated_directive_stays_text() -> None:
    assert parse_directives("x [[demo: chunks=2")[0] == "x [[demo: chunks=2"


def test_faults_and_overrides() -> None:
    _, pairs = parse_directives(
        '[[demo: error=529 message="busy" cut=3 stall=0.5 stop=max_tokens times=2]]'
    )
    reply, times = reply_from_directives(pairs)
    assert (reply.error_status, reply.error_message) == (529, "busy")
    assert (reply.cut_after_chunks, reply.stall, reply.stop_reason) == (3, 0.5, "max_tokens")
    assert times == 2
