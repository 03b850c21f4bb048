"""``/admin/accounts``: upstream accounts over the admin API (ASGI, a scripted runner, SQLite).

Secrets go in once and never come out: not in an answer, a log line or the database's
bytes (only their hint and their ciphertext). Bad input is a clean 400 in the admin API's
error shape, never a 500.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from ccgate.accounts.plan import Reading, Window
from ccgate.app import create_app
from ccgate.config import load_settings
from ccgate.gateway import Gateway
from ccgate.testing import ScriptedRunner
from tests.test_app import assert_openai_error

pytestmark = pytest.mark.unit

ADMIN_KEY = "admin-key-for-account-tests-0123456789abcdef"
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
#: The settings' credential: the ``default`` account's, never shown either.
SETTINGS_KEY = "sk-ant-api03-SETTINGSsecretMIDDLEpart0000-wxyz"
TOKEN = "sk-ant-oat01-TOKENsecretMIDDLEpart1111111111-abcd"
API_KEY = "sk-ant-api03-APIKEYsecretMIDDLEpart22222222-efgh"
NEW_TOKEN = "sk-ant-oat01-REPLACEDsecretMIDDLEpart333333-ijkl"
SECRETS = (SETTINGS_KEY, TOKEN, API_KEY, NEW_TOKEN)
MIDDLES = ("SETTINGSsecretMIDDLE", "TOKENsecretMIDDLE", "APIKEYsecretMIDDLE", "REPLACEDsecret")


@asynccontextmanager
async def serve(data_dir: Path, **flags: Any) -> AsyncIterator[tuple[httpx.AsyncClient, Gateway]]:
    """Run the app in-process (lifespan and all); yield an admin client and its gateway."""
    settings = load_settings(
        {
            "data_dir": data_dir,
            "admin_key": ADMIN_KEY,
            "upstream_api_key": SETTINGS_KEY,
            **flags,
        },
        {},
    )
    app = create_app(settings, runner=ScriptedRunner(), environ={})
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://localhost", headers=ADMIN
        ) as client,
    ):
        yield client, app.state.ccgate


@pytest.fixture
async def admin(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Gateway]]:
    async with serve(tmp_path / "data") as pair:
        yield pair


def assert_no_secret(text: str) -> None:
    """Fail when any test secret, or its middle, appears in ``text``."""
    for secret in (*SECRETS, *MIDDLES):
        assert secret not in text, f"a secret leaked: {secret[:16]}…"


async def make(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/admin/accounts", json=body)
    assert response.status_code == 201, response.text
    assert_no_secret(response.text)
    made: dict[str, Any] = response.json()
    return made


def database_bytes(data_dir: Path) -> bytes:
    return b"".join(path.read_bytes() for path in sorted(data_dir.glob("ccgate.db*")))


# --- the default account --------------------------------------------------------------------


async def test_the_settings_credential_is_the_default_account(
    admin: tuple[httpx.AsyncClient, Gateway],
) -> None:
    client, _ = admin
    listing = await client.get("/admin/accounts")
    assert listing.status_code == 200
    assert_no_secret(listing.text)
    body = listing.json()
    assert body["object"] == "list"
    [default] = body["data"]
    assert default["object"] == "upstream_account"
    assert (default["name"], default["source"], default["kind"]) == (
        "default",
        "settings",
        "api_key",
    )
    assert default["secret_hint"] == "sk-ant-api03-…wxyz"
    assert default["enabled"] and default["available"] and default["plan"]["reading"] is None
    assert body["summary"] == {
        "accounts": 1,
        "enabled": 1,
        "available": 1,
        "cooling": 0,
        "headroom": 1.0,
        "next_account": "default",
        "last_resort": False,
        "unavailable_reason": None,
        "next_available_at": None,
        "routing": "headroom",
        "allow_extra_usage": False,
        "routed": None,  # a test's runner: no router counts turns
    }

    for ref in ("default", default["id"]):
        error = assert_openai_error(await client.delete(f"/admin/accounts/{ref}"), 400)
        assert "credential setting" in error["message"] and "disable" in error["message"]
    refused = await client.patch("/admin/accounts/default", json={"secret": TOKEN})
    error = assert_openai_error(refused, 400)
    assert error["param"] == "secret" and "setting" in error["message"]
    assert_no_secret(refused.text)
    assert len((await client.get("/admin/accounts")).json()["data"]) == 1


async def test_the_default_account_survives_a_restart_unchanged(tmp_path: Path) -> None:
    async with serve(tmp_path / "data") as (client, _):
        first = (await client.get("/admin/accounts/default")).json()
        await client.patch("/admin/accounts/default", json={"priority": 7})
    async with serve(tmp_path / "data") as (client, _):
        listing = (await client.get("/admin/accounts")).json()["data"]
    assert [a["id"] for a in listing] == [first["id"]]
    assert listing[0]["priority"] == 7


# --- adding, changing, removing ----------------------------------------------------------------


async def test_secrets_are_stored_encrypted_and_never_shown(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    data = tmp_path / "data"
    async with serve(data) as (client, gateway):
        token = await make(client, name="team", kind="oauth_token", secret=TOKEN)
        key = await make(client, name="fallback", kind="api_key", secret=API_KEY)
        login = await make(client, name="mine", kind="login", priority=3, enabled=False)
        assert token["secret_hint"] == "sk-ant-oat01-…abcd" and token["priority"] == 0
        assert key["priority"] == 100, "an API key is a fallback behind the subscriptions"
        assert (login["secret_hint"], login["priority"], login["enabled"]) == (None, 3, False)
        assert "secret" not in token and "secret" not in key
        changed = await client.patch("/admin/accounts/team", json={"secret": NEW_TOKEN})
        assert changed.status_code == 200 and changed.json()["secret_hint"] == "sk-ant-oat01-…ijkl"
        texts = [
            changed.text,
            (await client.get("/admin/accounts")).text,
            (await client.get("/admin/accounts/team")).text,
            (await client.get("/admin/accounts/fallback")).text,
            (await client.post("/admin/accounts/team/reset")).text,
        ]
        for text in texts:
            assert_no_secret(text)
        # The router's side gets the secrets in clear (and only it).
        ready = {u.name: u.secret for u in gateway.accounts.upstreams()}
        assert ready == {"default": SETTINGS_KEY, "team": NEW_TOKEN, "fallback": API_KEY}
        await gateway.accounts.flush()
    assert_no_secret(caplog.text)
    stored = database_bytes(data)
    for secret in (*SECRETS, *MIDDLES):
        assert secret.encode() not in stored
    with sqlite3.connect(data / "ccgate.db") as db:
        rows = dict(db.execute("SELECT name, secret FROM accounts").fetchall())
    assert rows["default"] is None, "the settings' credential stays in the settings"
    assert rows["mine"] is None
    assert rows["team"].startswith("v1:") and rows["fallback"].startswith("v1:")


async def test_change_enable_disable_and_remove(admin: tuple[httpx.AsyncClient, Gateway]) -> None:
    client, gateway = admin
    made = await make(client, name="team", kind="oauth_token", secret=TOKEN)
    path = f"/admin/accounts/{made['id']}"
    changed = await client.patch(
        path, json={"name": "team-2", "priority": -5, "base_url": "https://proxy.example/v1/"}
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert (body["name"], body["priority"], body["base_url"]) == (
        "team-2",
        -5,
        "https://proxy.example/v1",
    )
    listing = (await client.get("/admin/accounts")).json()
    assert [a["name"] for a in listing["data"]] == ["team-2", "default"], "priority order"
    assert listing["summary"]["next_account"] == "team-2"

    off = (await client.patch("/admin/accounts/team-2", json={"enabled": False})).json()
    assert off["enabled"] is False and off["available"] is False
    assert [u.name for u in gateway.accounts.upstreams()] == ["default"]
    summary = (await client.get("/admin/accounts")).json()["summary"]
    assert (summary["enabled"], summary["available"], summary["next_account"]) == (
        1,
        1,
        "default",
    )
    on = (await client.patch("/admin/accounts/team-2", json={"enabled": True})).json()
    assert on["enabled"] is True and on["available"] is True

    # null leaves a field as it is, but a base URL: null removes it.
    kept = (await client.patch(path, json={"name": None, "priority": None})).json()
    assert (kept["name"], kept["priority"]) == ("team-2", -5)
    cleared = (await client.patch(path, json={"base_url": None})).json()
    assert cleared["base_url"] is None

    taken = await client.patch(path, json={"name": "default"})
    assert assert_openai_error(taken, 409)["type"]
    duplicate = await client.post(
        "/admin/accounts", json={"name": "team-2", "kind": "api_key", "secret": API_KEY}
    )
    assert_openai_error(duplicate, 409)
    assert_no_secret(duplicate.text)

    removed = await client.delete(path)
    assert removed.status_code == 200 and removed.json()["name"] == "team-2"
    assert_openai_error(await client.get(path), 404)
    assert_openai_error(await client.delete(path), 404)
    missing = assert_openai_error(await client.get("/admin/accounts/nobody"), 404)
    assert "ccgate accounts list" in missing["message"]


async def test_a_cooldown_shows_and_reset_ends_it(admin: tuple[httpx.AsyncClient, Gateway]) -> None:
    client, gateway = admin
    made = await make(client, name="team", kind="oauth_token", secret=TOKEN)
    now = time.time()
    reading = Reading(
        observed_at=now,
        source="answer",
        status="rejected",
        binding="five_hour",
        resets_at=now + 3600,
        windows=(
            Window("five_hour", 1.0, now + 3600, "rejected"),
            Window("seven_day", 0.31, now + 5 * 86_400, "allowed"),
        ),
    )
    gateway.accounts.meter.observe(made["id"], reading)
    gateway.accounts.meter.refused(
        gateway.accounts.find("default").id,
        until=now + 600,
        reason="its upstream refused the credentials",
        limit="credentials",
    )

    team = (await client.get("/admin/accounts/team")).json()
    assert team["available"] is False and team["headroom"] == 0.0
    assert "5-hour window is used up" in team["unavailable_reason"]
    assert team["plan"]["cooldown"]["limit"] == "plan_window"
    assert team["plan"]["cooldown"]["until"] == pytest.approx(now + 3600)
    windows = {w["name"]: w for w in team["plan"]["reading"]["windows"]}
    assert windows["seven_day"]["utilization"] == 0.31 and windows["seven_day"]["label"] == "7-day"
    assert team["plan"]["reading"]["observed_at"] == pytest.approx(now)

    summary = (await client.get("/admin/accounts")).json()["summary"]
    # The default account cools down for its credentials, not its plan: it is the last resort.
    assert (summary["available"], summary["cooling"], summary["next_account"]) == (
        0,
        2,
        "default",
    )
    assert summary["last_resort"] is True
    assert "account 'team'" in summary["unavailable_reason"]
    assert summary["next_available_at"] == pytest.approx(now + 600)
    assert summary["headroom"] == 0.0

    reset = await client.post("/admin/accounts/team/reset")
    assert reset.status_code == 200
    body = reset.json()
    assert body["available"] is True and body["plan"]["cooldown"] is None
    assert body["plan"]["reset_at"] is not None
    assert gateway.accounts.meter.verdict(made["id"]).usable
    summary = (await client.get("/admin/accounts")).json()["summary"]
    assert summary["next_account"] == "team" and summary["cooling"] == 1
    assert_openai_error(await client.post("/admin/accounts/nobody/reset"), 404)


async def test_the_admin_key_is_required(admin: tuple[httpx.AsyncClient, Gateway]) -> None:
    client, _ = admin
    for method, path in (
        ("GET", "/admin/accounts"),
        ("POST", "/admin/accounts"),
        ("GET", "/admin/accounts/default"),
        ("PATCH", "/admin/accounts/default"),
        ("DELETE", "/admin/accounts/default"),
        ("POST", "/admin/accounts/default/reset"),
    ):
        for headers in ({"authorization": ""}, {"authorization": "Bearer wrong"}):
            response = await client.request(method, path, headers=headers, json={})
            assert_openai_error(response, 401)
    listing = (await client.get("/admin/accounts")).json()["data"]
    assert [a["name"] for a in listing] == ["default"] and listing[0]["priority"] == 0


async def test_the_openapi_document_lists_the_account_routes(
    admin: tuple[httpx.AsyncClient, Gateway],
) -> None:
    client, _ = admin
    document = (await client.get("/openapi.json")).json()
    paths = document["paths"]
    assert set(paths["/admin/accounts"]) == {"get", "post"}
    assert set(paths["/admin/accounts/{id_or_name}"]) == {"get", "patch", "delete"}
    assert set(paths["/admin/accounts/{id_or_name}/reset"]) == {"post"}
    schema = document["components"]["schemas"]["AccountCreate"]
    assert schema["additionalProperties"] is False
    secret = schema["properties"]["secret"]
    assert secret["writeOnly"] is True and secret["anyOf"][0]["maxLength"] == 4096


# --- hostile input ---------------------------------------------------------------------------


def raw(body: Any) -> bytes:
    """Return ``body`` as JSON bytes, lone surrogates escaped as a JavaScript client sends."""
    return json.dumps(body).encode()


MEGABYTE = "x" * (1 << 20)
BAD_CREATES: list[Any] = [
    {"name": "\ud800", "kind": "login"},
    {"name": "team", "kind": "oauth_token", "secret": "sk-ant-\udfff"},
    {"name": "team", "kind": "login", "base_url": "https://x\ud800.example"},
    {"name": "te\x00am", "kind": "login"},
    {"name": "te\nam", "kind": "login"},
    {"name": "team\u202e", "kind": "login"},
    {"name": "", "kind": "login"},
    {"name": "-team", "kind": "login"},
    {"name": MEGABYTE, "kind": "login"},
    {"name": "team", "kind": "api_key", "secret": MEGABYTE},
    {"name": "team", "kind": "login", "base_url": MEGABYTE},
    {"name": "team", "kind": "api_key", "secret": "sk-ant with a space"},
    {"name": "team", "kind": "api_key", "secret": "sk-ant-\x00\x07"},
    {"name": "team", "kind": "api_key", "secret": "sk-ant-ünïcode"},
    {"name": "team", "kind": "api_key", "secret": "   "},
    {"name": "team", "kind": "api_key"},
    {"name": "team", "kind": "oauth_token", "secret": None},
    {"name": "team", "kind": "login", "secret": TOKEN},
    {"name": "team", "kind": "weird"},
    {"name": "team", "kind": "LOGIN"},
    {"name": "team"},
    {"kind": "login"},
    {"name": "team", "kind": "login", "priority": 2**64},
    {"name": "team", "kind": "login", "priority": 10**400},
    {"name": "team", "kind": "login", "priority": 1e300},
    {"name": "team", "kind": "login", "priority": 1.5},
    {"name": "team", "kind": "login", "priority": "5"},
    {"name": "team", "kind": "login", "priority": True},
    {"name": "team", "kind": "login", "enabled": "yes"},
    {"name": "team", "kind": "login", "enabled": 1},
    {"name": 5, "kind": "login"},
    {"name": ["team"], "kind": "login"},
    {"name": "team", "kind": "login", "base_url": "ftp://example.com"},
    {"name": "team", "kind": "login", "base_url": "https://exa mple.com"},
    {"name": "team", "kind": "login", "base_url": "javascript:alert(1)"},
    {"name": "team", "kind": "login", "source": "settings"},
    {"name": "team", "kind": "login", "id": "acc_0"},
    [],
    "team",
    None,
]


@pytest.mark.parametrize("body", BAD_CREATES, ids=range(len(BAD_CREATES)))
async def test_bad_creates_are_a_clean_400(
    admin: tuple[httpx.AsyncClient, Gateway], body: Any
) -> None:
    client, _ = admin
    response = await client.post(
        "/admin/accounts", content=raw(body), headers={"content-type": "application/json"}
    )
    error = assert_openai_error(response, 400)
    assert error["type"] == "invalid_request_error"
    assert_no_secret(response.text)
    assert len(response.content) < 2000, "the error does not echo the input"
    assert [a["name"] for a in (await client.get("/admin/accounts")).json()["data"]] == ["default"]


@pytest.mark.parametrize(
    "body",
    [
        {"name": "\ud800"},
        {"secret": "\udfff"},
        {"name": "a\x00"},
        {"name": MEGABYTE},
        {"secret": MEGABYTE},
        {"base_url": MEGABYTE},
        {"base_url": "not a url"},
        {"priority": 2**63},
        {"priority": -(2**63)},
        {"priority": 1_000_001},
        {"priority": float("1e20")},
        {"enabled": "false"},
        {"enabled": 0},
        {"kind": "api_key"},
        {"source": "settings"},
        {"secret": "has a space"},
        {"secret": ""},
        [],
    ],
)
async def test_bad_updates_are_a_clean_400(
    admin: tuple[httpx.AsyncClient, Gateway], body: Any
) -> None:
    client, _ = admin
    made = await make(client, name="team", kind="oauth_token", secret=TOKEN)
    response = await client.patch(
        f"/admin/accounts/{made['id']}",
        content=raw(body),
        headers={"content-type": "application/json"},
    )
    assert_openai_error(response, 400)
    assert_no_secret(response.text)
    after = (await client.get(f"/admin/accounts/{made['id']}")).json()
    assert {k: after[k] for k in ("name", "priority", "enabled", "base_url", "secret_hint")} == {
        "name": "team",
        "priority": 0,
        "enabled": True,
        "base_url": None,
        "secret_hint": "sk-ant-oat01-…abcd",
    }


@pytest.mark.parametrize(
    "raw_body",
    [
        b'{"name": "team", "kind": "login", "priority": NaN}',
        b'{"name": "team", "kind": "login", "priority": 1e999}',
        b'{"name": "team", "kind": "login", "priority": ' + b"9" * 401 + b"}",
        b'{"name": "team", "kind": "login"',
        b'{"name": "team", "kind": "login", "name": "\\ud800"}',
        b"[" * 100 + b"]" * 100,
        b"\xff\xfe",
        b"",
    ],
)
async def test_malformed_bodies_are_a_clean_400(
    admin: tuple[httpx.AsyncClient, Gateway], raw_body: bytes
) -> None:
    client, _ = admin
    response = await client.post(
        "/admin/accounts", content=raw_body, headers={"content-type": "application/json"}
    )
    assert_openai_error(response, 400)


@pytest.mark.parametrize(
    "ref", ["%00", "%0A", "a%00b", "%ED%A0%80", "%FF", "..%2F..%2Fetc", "x" * 201, "%E2%80%AE"]
)
async def test_hostile_account_paths_are_never_a_500(
    admin: tuple[httpx.AsyncClient, Gateway], ref: str
) -> None:
    client, _ = admin
    for method, suffix in (("GET", ""), ("PATCH", ""), ("DELETE", ""), ("POST", "/reset")):
        response = await client.request(
            method, f"/admin/accounts/{ref}{suffix}", json={"priority": 1}
        )
        assert response.status_code in (400, 404), (method, ref, response.text)
        assert_openai_error(response, response.status_code)
    listing = (await client.get("/admin/accounts")).json()["data"]
    assert [(a["name"], a["priority"]) for a in listing] == [("default", 0)]


# --- a key's plan_share ------------------------------------------------------------------------


async def test_a_keys_plan_share_is_a_fraction(admin: tuple[httpx.AsyncClient, Gateway]) -> None:
    client, gateway = admin
    made = await client.post("/admin/keys", json={"name": "k", "quota": {"plan_share": 0.25}})
    assert made.status_code == 201, made.text
    assert made.json()["quota"] == {"plan_share": 0.25}
    record = await gateway.keys.get(made.json()["id"])
    assert record.quota.plan_share == 0.25
    whole = await client.patch(f"/admin/keys/{record.id}", json={"quota": {"plan_share": 1}})
    assert whole.json()["quota"] == {"plan_share": 1.0}
    assert isinstance(whole.json()["quota"]["plan_share"], float)
    for share in (-0.1, 1.01, 2, "0.5", True, None, 1e999):
        body = raw({"name": "k2", "quota": {"plan_share": share}})
        if share is None:
            response = await client.post(
                "/admin/keys", content=body, headers={"content-type": "application/json"}
            )
            assert response.status_code == 201 and response.json()["quota"] == {}
            continue
        response = await client.post(
            "/admin/keys", content=body, headers={"content-type": "application/json"}
        )
        error = assert_openai_error(response, 400)
        if share != 1e999:  # refused by the JSON reader already: no finite number
            assert error["param"] == "quota.plan_share", error
