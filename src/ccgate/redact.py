"""Keep network addresses out of error messages that reach clients.

Claude Code words a failed upstream call with the address it tried (``connect
ECONNREFUSED 127.0.0.1:41547``, ``getaddrinfo ENOTFOUND llm.internal``), and an
upstream's or a proxy's error body may name its own (``dial tcp
10.0.0.5:8080``). A client has no business learning where ccgate's upstream
lives, so every address in such a message becomes ``[address]``: URLs, IP
addresses (with a port or not), ``name:port`` and the name after a network
error code. The log keeps the full text for the operator.
"""

from __future__ import annotations

import re

__all__ = ["HIDDEN", "hide_addresses"]

HIDDEN = "[address]"

_NETWORK_CODES = (
    "ENOTFOUND|ECONNREFUSED|ECONNRESET|ECONNABORTED|ETIMEDOUT|EHOSTUNREACH|ENETUNREACH|"
    "EHOSTDOWN|EAI_AGAIN|EADDRNOTAVAIL|EPIPE"
)
_PATTERNS = (
    # A URL, whatever its scheme: its host, port and path all go.
    (re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s'\"<>(){}]+", re.IGNORECASE), HIDDEN),
    # What follows a network error code is the address it concerns ("ECONNREFUSED ::1:80").
    (re.compile(rf"\b({_NETWORK_CODES})\s+[^\s,;()'\"]+"), rf"\1 {HIDDEN}"),
    # A bracketed IPv6 address, with a port or not.
    (re.compile(r"\[[0-9a-z.%]*:[0-9a-z:.%]*\](?::\d{1,5})?", re.IGNORECASE), HIDDEN),
    # An IPv4 address, with a port or not.
    (re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?::\d{1,5})?(?![\w.])"), HIDDEN),
    # A host name with a port.
    (
        re.compile(
            r"(?<![\w.-])(?:localhost|(?:[a-z0-9-]+\.)+[a-z][a-z0-9-]*):\d{1,5}\b", re.IGNORECASE
        ),
        HIDDEN,
    ),
)


def hide_addresses(message: str) -> str:
    """Return ``message`` with every network address in it replaced by ``[address]``."""
    for pattern, replacement in _PATTERNS:
        message = pattern.sub(replacement, message)
    return message
