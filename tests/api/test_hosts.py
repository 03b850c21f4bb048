"""Which Host and Origin values a gateway accepts, and the allowed_hosts setting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ccgate.api.hosts import HostPolicy
from ccgate.config import Settings, host_name, load_settings
from ccgate.errors import ConfigError

pytestmark = pytest.mark.unit

KEY = "Mq11TXMOe-pce6Kbj79WsfE7rRvDJck6Sk1WW6GWQi4"


def _settings(tmp_path: Path, **flags: Any) -> Settings:
    return load_settings({"data_dir": tmp_path, **flags}, {})


def _policy(tmp_path: Path, **flags: Any) -> HostPolicy:
    return HostPolicy.from_settings(_settings(tmp_path, **flags))


@pytest.mark.parametrize(
    ("authority", "name"),
    [
        ("localhost", "localhost"),
        ("LocalHost:8787", "localhost"),
        ("localhost.:8787", "localhost"),
        ("127.0.0.1:1", "127.0.0.1"),
        ("[::1]:8787", "::1"),
        ("[::1]", "::1"),
        ("gw.example.com", "gw.example.com"),
        ("::1", None),
        ("host:port", None),
        ("[::1]x", None),
        ("[::1", None),
        (":8787", None),
        ("", None),
    ],
)
def test_host_name_of_an_authority(authority: str, name: str | None) -> None:
    assert host_name(authority) == name


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "localhost:8787",
        "LOCALHOST:1",
        "127.0.0.1:8787",
        "127.0.0.2",
        "[::1]:8787",
        "[0:0:0:0:0:0:0:1]",
        None,
    ],
)
def test_loopback_names_with_any_port_are_served_by_default(
    tmp_path: Path, host: str | None
) -> None:
    assert _policy(tmp_path).host_allowed(host)


@pytest.mark.parametrize(
    "host",
    [
        "evil.example:8787",
        "evil.example",
        "localhost.evil.example",
        "127.0.0.1.evil.example",
        "192.168.1.5:8787",
        "0.0.0.0:8787",
        "[::1]evil",
        "",
    ],
)
def test_other_names_are_not_served_on_loopback(tmp_path: Path, host: str) -> None:
    assert not _policy(tmp_path).host_allowed(host)


def test_allowed_hosts_adds_names_from_any_source(tmp_path: Path) -> None:
    from_env = load_settings(
        {"data_dir": tmp_path}, {"CCGATE_ALLOWED_HOSTS": " GW.example.com., 10.0.0.7 ,,[::2]"}
    )
    assert from_env.allowed_hosts == ("gw.example.com", "10.0.0.7", "::2")
    (tmp_path / "ccgate.toml").write_text('allowed_hosts = ["proxy.lan"]\n')
    assert _settings(tmp_path).allowed_hosts == ("proxy.lan",)
    policy = HostPolicy.from_settings(from_env)
    for host in ("gw.example.com:443", "gw.example.com", "10.0.0.7:8787", "[::2]:1", "localhost"):
        assert policy.host_allowed(host), host
    assert not policy.host_allowed("evil.example")


@pytest.mark.parametrize(
    "entry", ["http://gw.example.com", "gw.example.com:443", "gw.example.com/x", "[::1]:80", "a:b"]
)
def test_allowed_hosts_refuses_urls_and_ports(tmp_path: Path, entry: str) -> None:
    with pytest.raises(ConfigError, match="allowed_hosts") as info:
        _settings(tmp_path, allowed_hosts=entry)
    assert "without a scheme or port" in str(info.value)


def test_star_turns_both_checks_off(tmp_path: Path) -> None:
    policy = _policy(tmp_path, allowed_hosts="*")
    assert policy.host_allowed("evil.example:8787")
    assert policy.origin_allowed("https://evil.example", "evil.example:8787")


def test_a_network_bind_serves_any_host_unless_names_are_listed(tmp_path: Path) -> None:
    auth = {"auth_mode": "shared", "api_key": KEY}
    wildcard = _policy(tmp_path, host="0.0.0.0", **auth)
    assert wildcard.host_allowed("gw.example.com:8787") and wildcard.host_allowed("10.1.2.3")
    # Browsers of other origins are still refused: only the page's own origin is.
    assert not wildcard.origin_allowed("https://evil.example", "gw.example.com:8787")
    assert wildcard.origin_allowed("http://gw.example.com:8787", "gw.example.com:8787")

    listed = _policy(tmp_path, host="0.0.0.0", allowed_hosts="gw.example.com", **auth)
    assert listed.host_allowed("gw.example.com:8787") and listed.host_allowed("127.0.0.1")
    assert not listed.host_allowed("10.1.2.3:8787")

    bound = _policy(tmp_path, host="192.168.1.5", allowed_hosts="gw.example.com", **auth)
    assert bound.host_allowed("192.168.1.5:8787")  # the address it listens on
    assert not bound.host_allowed("192.168.1.6:8787")


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("http://localhost:3000", True),
        ("http://127.0.0.1:8787", True),
        ("http://[::1]:5173", True),
        ("https://localhost", True),
        ("http://evil.example", False),
        ("http://evil.example:8787", False),
        ("http://localhost.evil.example", False),
        ("null", False),
        ("file://", False),
        ("chrome-extension://abcdef", False),
        ("garbage", False),
    ],
)
def test_origins_on_loopback(tmp_path: Path, origin: str, allowed: bool) -> None:
    assert _policy(tmp_path).origin_allowed(origin, "127.0.0.1:8787") is allowed


def test_a_listed_name_is_an_allowed_origin(tmp_path: Path) -> None:
    policy = _policy(tmp_path, allowed_hosts="ui.example.com")
    assert policy.origin_allowed("https://ui.example.com", "127.0.0.1:8787")
    assert not policy.origin_allowed("https://other.example.com", "127.0.0.1:8787")
