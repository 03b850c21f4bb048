"""The key-strength estimate: patterns count for little, random keys pass, whatever the length."""

from __future__ import annotations

import secrets

import pytest

from ccgate.keystrength import MIN_BITS, entropy_bits, weakness

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "key",
    [
        "a" * 32,
        "password" * 4,
        "0" * 32,
        "a" * 5000,
        "Password1" * 4,
        "0123456789" * 4,
        "abcdefghijklmnopqrstuvwxyz",
        "zyxwvutsrqponmlkjihgfedcba9876543210",
        "qwertyuiopasdfghjklzxcvbnm",
        "abcabcabcabcabcabcabcabcabcabc",
        "replace-with-a-long-random-key",
        "MyGatewayKey2024!",
        "changeme-changeme-changeme",
        "13579bdfhjlnprtvxz",
        "",
    ],
)
def test_patterns_are_weak_whatever_their_length(key: str) -> None:
    assert entropy_bits(key) < MIN_BITS
    assert weakness(key) is not None


def test_the_examples_of_the_issue_are_far_below_the_bar() -> None:
    for key in ("a" * 32, "password" * 4, "0" * 32):
        assert entropy_bits(key) < 20, key


def test_generated_keys_pass() -> None:
    """Random keys of the documented recipe pass, every one of many; so do smaller ones."""
    for _ in range(500):
        key = secrets.token_urlsafe(32)
        assert weakness(key) is None, key
    for _ in range(300):
        for key in (
            secrets.token_urlsafe(16),
            secrets.token_hex(16),
            "ccg_" + secrets.token_hex(24),
        ):
            assert entropy_bits(key) >= MIN_BITS, key


def test_a_repeat_adds_little_and_a_random_tail_adds_much() -> None:
    key = secrets.token_urlsafe(16)
    assert entropy_bits(key * 3) < entropy_bits(key) + 20
    assert entropy_bits(key + secrets.token_urlsafe(16)) > entropy_bits(key) + 60


def test_the_message_says_why_and_never_holds_the_key() -> None:
    message = weakness("password" * 4)
    assert message is not None
    assert "too easy to guess" in message and str(MIN_BITS) in message
    assert "password" not in message


def test_other_alphabets_count() -> None:
    assert weakness("".join(secrets.choice("αβγδεζηθικλμνξοπρστυφχψω") for _ in range(40))) is None
