"""Estimate how guessable a key is, so ccgate can refuse weak ones (zxcvbn's idea, no dependency).

A key is read as the cheapest sequence of pieces that spells it, each piece
costing the bits an attacker needs to name it:

- one character: log2 of the alphabet the key's character classes span
  (lowercase 26, uppercase 26, digits 10, ASCII symbols and space 33, anything
  else 100);
- a repeat of earlier text, 3 characters or more (``aaaa``, ``abcabc``): where
  it starts and how long it is;
- a run with a constant step (``abcd``, ``13579``, ``zyxw``): its first
  character, its step and its length;
- a common word (``password``, ``secret``, ``qwerty``, ...), in any case: its
  place in a short list, and one bit more when it has capitals.

The estimate is the total of the cheapest reading (dynamic programming over the
first :data:`_ANALYSED` characters). It errs high for keys made of words it does
not know, and low for random ones only by a little: a key of
``secrets.token_urlsafe(32)`` is estimated at ~280 bits (never below ~240), one of
``token_urlsafe(16)`` at ~140 (never below ~115), ``"a" * 32`` at 11 and
``"password" * 4`` at 14.
"""

from __future__ import annotations

import math
import string

__all__ = ["MIN_BITS", "MAKE_ONE", "entropy_bits", "weakness"]

#: What a key must be worth: NIST's minimum security strength, which the estimate of
#: 16 random bytes always clears.
MIN_BITS = 112

#: The command that makes a good key, for messages and documentation.
MAKE_ONE = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"

#: Characters read (longer keys are judged by their start, which must be strong alone).
_ANALYSED = 256

_SHORTEST_PATTERN = 3
_STEPS = (1, 2, 3)

#: Words people put in keys (a repeat of one is a repeat, not a second word).
_WORDS = (
    "password",
    "passwd",
    "pass",
    "secret",
    "secrets",
    "admin",
    "administrator",
    "root",
    "letmein",
    "welcome",
    "qwerty",
    "qwertz",
    "azerty",
    "asdf",
    "zxcv",
    "iloveyou",
    "monkey",
    "dragon",
    "master",
    "login",
    "changeme",
    "change",
    "default",
    "example",
    "test",
    "testing",
    "token",
    "apikey",
    "key",
    "keys",
    "ccgate",
    "claude",
    "anthropic",
    "openai",
    "gateway",
    "replace",
    "random",
    "long",
    "hunter",
    "trustno",
    "football",
    "baseball",
    "shadow",
    "sunshine",
    "princess",
    "access",
    "private",
    "server",
    "local",
    "localhost",
    "demo",
    "client",
    "user",
    "guest",
    "metrics",
    "shared",
    "value",
)


def _alphabet(key: str) -> int:
    size = 0
    for chars, count in (
        (string.ascii_lowercase, 26),
        (string.ascii_uppercase, 26),
        (string.digits, 10),
        (string.punctuation + " ", 33),
    ):
        if any(c in chars for c in key):
            size += count
    if any(not c.isascii() for c in key):
        size += 100
    return max(size, 1)


def _longest_repeat(key: str, start: int) -> int:
    """Return the longest piece at ``start`` that already began earlier (0 if none)."""
    if start == 0:
        return 0

    def seen(length: int) -> bool:
        # An earlier occurrence may overlap this one ("aaaa" repeats "a" at distance 1).
        return key.find(key[start : start + length], 0, start + length - 1) != -1

    low, high = 0, len(key) - start
    while low < high:  # the longest length that was seen: shorter pieces of it were too
        middle = (low + high + 1) // 2
        if seen(middle):
            low = middle
        else:
            high = middle - 1
    return low


def _run_length(key: str, start: int, step: int) -> int:
    """Return how many characters from ``start`` follow one another by ``step``."""
    length = 1
    while start + length < len(key) and (
        ord(key[start + length]) - ord(key[start + length - 1]) == step
    ):
        length += 1
    return length


def entropy_bits(key: str) -> float:
    """Return an estimate of the bits an attacker needs to guess ``key``."""
    text = key[:_ANALYSED]
    size = len(text)
    if size == 0:
        return 0.0
    char_bits = math.log2(_alphabet(text))
    word_bits = math.log2(len(_WORDS))
    step_bits = math.log2(2 * len(_STEPS))
    best = [0.0] + [math.inf] * size
    lowered = text.lower()
    for start in range(size):
        here = best[start]

        def offer(end: int, cost: float, start: int = start, here: float = here) -> None:
            if here + cost < best[end]:
                best[end] = here + cost

        offer(start + 1, char_bits)
        for length in range(_SHORTEST_PATTERN, _longest_repeat(text, start) + 1):
            offer(start + length, math.log2(start) + math.log2(length) + 1)
        for step in (*_STEPS, *(-s for s in _STEPS)):
            run = _run_length(text, start, step)
            for length in range(_SHORTEST_PATTERN, run + 1):
                offer(start + length, char_bits + step_bits + math.log2(length))
        for word in _WORDS:
            if lowered.startswith(word, start):
                piece = text[start : start + len(word)]
                offer(start + len(word), word_bits + (1 if piece != piece.lower() else 0))
    return best[size]


def weakness(key: str) -> str | None:
    """Say why ``key`` is too easy to guess, or return None when it is strong enough."""
    bits = entropy_bits(key)
    if bits >= MIN_BITS:
        return None
    return (
        f"it is too easy to guess: ccgate estimates about {bits:.0f} bits of entropy in it and "
        f"needs {MIN_BITS} (repeated characters, runs such as 1234 or abcd, and common words "
        "count for little, whatever the length)"
    )
