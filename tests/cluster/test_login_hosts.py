"""A ``login`` account used by replicas on several hosts is told in the log, once per change."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from ccgate.accounts.manager import Upstream
from ccgate.cluster.replicas import Peer, hosts, replica_id
from ccgate.gateway import watch_logins

pytestmark = pytest.mark.unit


def _peer(host: str, pid: int) -> Peer:
    return Peer(f"{host}-{pid}-a1b2c3", f"http://{host}:8787")


def _account(name: str, kind: str) -> Upstream:
    return Upstream(f"acct_{name}", name, kind, None, None, 0, "database")


def test_hosts_are_read_from_replica_ids() -> None:
    assert hosts([_peer("gw-eu-1", 10), _peer("gw-eu-1", 11), _peer("gw-us", 12)]) == [
        "gw-eu-1",
        "gw-us",
    ]
    assert hosts([Peer(replica_id(), "http://127.0.0.1:1")]) != []


async def test_a_login_on_several_hosts_is_warned_about_once_per_change(
    caplog: pytest.LogCaptureFixture,
) -> None:
    peers = [_peer("gw-a", 1), _peer("gw-a", 2)]
    accounts = [_account("team", "oauth_token"), _account("mine", "login")]

    async def alive() -> list[Peer]:
        return list(peers)

    def warnings() -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if r.getMessage().startswith("login_account_on_several_hosts")
        ]

    caplog.set_level(logging.WARNING, logger="ccgate")
    watcher = asyncio.ensure_future(watch_logins(alive, lambda: list(accounts), every=0.01))
    try:
        await asyncio.sleep(0.1)
        assert warnings() == []  # one host: its replicas share one login file
        peers.append(_peer("gw-b", 3))
        await asyncio.sleep(0.1)
        assert warnings() == ["login_account_on_several_hosts accounts=mine hosts=gw-a,gw-b"]
        accounts[1] = _account("mine", "oauth_token")  # no login left
        await asyncio.sleep(0.1)
        accounts[1] = _account("mine", "login")  # and again: told again
        await asyncio.sleep(0.1)
        assert len(warnings()) == 2
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
