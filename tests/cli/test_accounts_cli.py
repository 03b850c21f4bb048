"""``ccgate accounts``: upstream accounts from the command line, straight on the database.

In-process (``run_accounts`` beside an app served over ASGI, as another process would
run it beside a server) and as real subprocesses (stdin, environment, exit codes, and a
running server adopting a change by itself). No secret is ever printed: only its hint.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from ccgate.accounts.plan import Reading, Window
from ccgate.app import create_app
from ccgate.cli.accounts import AccountRequest, run_accounts
from ccgate.cli.main import build_parser
from ccgate.config import Settings, load_settings
from ccgate.gateway import Gateway
from ccgate.testing import ScriptedRunner
from tests.gateway_testing import start_gateway, wait_until

ADMIN_KEY = "admin-key-for-account-cli-tests-0123456789ab"
TOKEN = "sk-ant-oat01-CLItokenSECRETmiddle11111111-abcd"
API_KEY = "sk-ant-api03-CLIapikeySECRETmiddle2222222-efgh"
NEW_KEY = "sk-ant-api03-CLInewkeySECRETmiddle3333333-ijkl"
SECRETS = (TOKEN, API_KEY, NEW_KEY, "SECRETmiddle")
ENV = {k: v for k, v in os.environ.items() if not k.startswith("CCGATE_")}
for _name in ("ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN"):
    ENV.pop(_name, None)


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"a secret leaked: {secret[:16]}…"


def settings_of(data_dir: Path, **flags: Any) -> Settings:
    return load_settings({"data_dir": data_dir, "admin_key": ADMIN_KEY, **flags}, {})


# --- in-process: the command beside a running app ---------------------------------------------


@asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Gateway]]:
    app = create_app(settings, runner=ScriptedRunner(), environ={})
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://localhost",
            headers={"authorization": f"Bearer {ADMIN_KEY}"},
        ) as client,
    ):
        yield client, app.state.ccgate


Run = Callable[..., Any]


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    """Return ``run(settings, action, ...) -> (status, stdout, stderr)`` of one command."""

    async def call(
        settings: Settings,
        action: str,
        *,
        stdin: str = "",
        environ: dict[str, str] | None = None,
        **fields: Any,
    ) -> tuple[int, str, str]:
        capsys.readouterr()
        status = await run_accounts(
            settings,
            AccountRequest(action, **fields),
            environ=environ or {},
            stdin=io.StringIO(stdin),
        )
        out, err = capsys.readouterr()
        assert_no_secret(out + err)
        return status, out, err

    return call


@pytest.mark.unit
async def test_first_run_makes_the_default_account_and_it_cannot_be_removed(
    tmp_path: Path, run: Run
) -> None:
    settings = settings_of(tmp_path / "data")
    status, out, _ = await run(settings, "list", environ={"CLAUDE_CODE_OAUTH_TOKEN": TOKEN})
    assert status == 0
    header, default = out.splitlines()[:2]
    assert header.split()[:4] == ["NAME", "KIND", "ENABLED", "STATE"]
    assert default.split()[:4] == ["default", "oauth_token", "yes", "available"]
    status, out, _ = await run(settings, "show", name="default", as_json=True)
    view = json.loads(out)
    assert (view["source"], view["secret_hint"]) == ("settings", "sk-ant-oat01-…abcd")

    status, _, err = await run(settings, "rm", name="default")
    assert status == 2 and "credential setting" in err and "disable" in err
    status, out, _ = await run(settings, "disable", name="default")
    assert status == 0 and "disabled" in out
    status, out, _ = await run(settings, "list", as_json=True)
    listing = json.loads(out)
    assert [(a["name"], a["enabled"]) for a in listing["data"]] == [("default", False)]
    assert listing["summary"]["next_account"] is None
    assert listing["summary"]["unavailable_reason"] == "no upstream account is enabled"


@pytest.mark.unit
async def test_a_later_run_does_not_rewrite_the_default_account(tmp_path: Path, run: Run) -> None:
    """The server saw a token in its environment; a shell without it changes nothing."""
    settings = settings_of(tmp_path / "data")
    await run(settings, "list", environ={"CLAUDE_CODE_OAUTH_TOKEN": TOKEN})
    status, out, _ = await run(settings, "show", name="default", as_json=True, environ={})
    view = json.loads(out)
    assert (view["kind"], view["secret_hint"]) == ("oauth_token", "sk-ant-oat01-…abcd")


@pytest.mark.unit
async def test_secrets_come_from_stdin_or_the_environment_and_are_stored_encrypted(
    tmp_path: Path, run: Run
) -> None:
    data = tmp_path / "data"
    settings = settings_of(data)
    status, out, _ = await run(
        settings, "add", name="team", kind="oauth_token", secret_stdin=True, stdin=TOKEN + "\n"
    )
    assert status == 0, out
    assert "sk-ant-oat01-…abcd" in out and "adopts it within 5 s" in out
    status, out, _ = await run(
        settings,
        "add",
        name="fallback",
        kind="api_key",
        secret_env="FALLBACK_KEY",
        environ={"FALLBACK_KEY": API_KEY},
        base_url="https://proxy.example/",
        as_json=True,
    )
    assert status == 0
    made = json.loads(out)
    assert made["object"] == "upstream_account" and "secret" not in made
    assert (made["priority"], made["base_url"], made["secret_hint"]) == (
        100,
        "https://proxy.example",
        "sk-ant-api03-…efgh",
    )
    status, out, _ = await run(settings, "add", name="mine", kind="login", disabled=True)
    assert status == 0 and "disabled" in out and "claude /login" in out

    status, out, _ = await run(
        settings, "set", name="fallback", secret_stdin=True, stdin=NEW_KEY, priority=50
    )
    assert status == 0 and "priority, secret" in out
    for action in ("list", "show"):
        for as_json in (False, True):
            for name in ("team", "fallback"):
                status, out, _ = await run(settings, action, name=name, as_json=as_json)
                assert status == 0
    status, out, _ = await run(settings, "show", name="fallback")
    assert "sk-ant-api03-…ijkl" in out and "an API key reports no plan" in out

    stored = b"".join(p.read_bytes() for p in sorted(data.glob("ccgate.db*")))
    for secret in SECRETS:
        assert secret.encode() not in stored
    with sqlite3.connect(data / "ccgate.db") as db:
        rows = dict(db.execute("SELECT name, secret FROM accounts").fetchall())
    assert rows["default"] is None and rows["mine"] is None
    assert rows["team"].startswith("v1:") and rows["fallback"].startswith("v1:")
    assert (data / "accounts.key").stat().st_mode & 0o777 == 0o600


@pytest.mark.unit
@pytest.mark.parametrize(
    ("fields", "status", "needle"),
    [
        ({"name": "x", "kind": "api_key"}, 2, "--secret-stdin"),
        ({"name": "x", "kind": "oauth_token"}, 2, "needs its secret"),
        ({"name": "x", "kind": "api_key", "plain_secret": True}, 2, "not taken as an argument"),
        ({"name": "x", "kind": "api_key", "secret_env": "NOPE"}, 2, "'NOPE' is not set"),
        ({"name": "x", "kind": "api_key", "secret_stdin": True}, 2, "nothing was read"),
        ({"name": "x", "kind": "api_key", "secret_env": "EMPTY"}, 2, "not set or empty"),
        ({"name": "x", "kind": "weird"}, 2, "kind: one of login, oauth_token, api_key"),
        ({"name": "x y", "kind": "login"}, 2, "an account name is"),
        ({"name": "x", "kind": "login", "secret_env": "SECRET"}, 2, "has no secret"),
        ({"name": "x", "kind": "api_key", "secret_env": "SPACED"}, 2, "printable ASCII"),
        ({"name": "x", "kind": "login", "base_url": "ftp://x"}, 2, "base_url: an http(s) URL"),
        ({"name": "x", "kind": "login", "priority": 10**12}, 2, "--priority must be between"),
        ({"name": "default", "kind": "login"}, 1, "named 'default' exists"),
    ],
)
async def test_bad_adds_say_what_to_do(
    tmp_path: Path, run: Run, fields: dict[str, Any], status: int, needle: str
) -> None:
    settings = settings_of(tmp_path / "data")
    environ = {"EMPTY": " ", "SECRET": API_KEY, "SPACED": "sk-ant-api03-with SECRETmiddle space"}
    got, out, err = await run(settings, "add", environ=environ, **fields)
    assert (got, out) == (status, "")
    assert needle in err, err
    _, out, _ = await run(settings, "list", as_json=True)
    assert [a["name"] for a in json.loads(out)["data"]] == ["default"]


@pytest.mark.unit
async def test_unknown_accounts_and_empty_changes(tmp_path: Path, run: Run) -> None:
    settings = settings_of(tmp_path / "data")
    for action in ("show", "enable", "disable", "rm", "reset", "set"):
        status, out, err = await run(settings, action, name="nobody", priority=1)
        assert (status, out) == (1, ""), action
        assert "no upstream account 'nobody'" in err and "ccgate accounts list" in err
    status, _, err = await run(settings, "set", name="default")
    assert status == 2 and "nothing to change" in err
    status, _, err = await run(settings, "set", name="default", secret_env="K", environ={"K": "k"})
    assert status == 2 and "setting" in err
    await run(settings, "add", name="a", kind="login")
    status, _, err = await run(settings, "set", name="a", new_name="default")
    assert status == 1 and "exists" in err


@pytest.mark.unit
async def test_another_account_key_cannot_add_secrets_the_server_could_not_read(
    tmp_path: Path, run: Run
) -> None:
    settings = settings_of(tmp_path / "data")
    await run(settings, "add", name="team", kind="api_key", secret_env="K", environ={"K": API_KEY})
    other = settings_of(tmp_path / "data", accounts_key="another key entirely")
    status, _, err = await run(
        other, "add", name="more", kind="api_key", secret_env="K", environ={"K": NEW_KEY}
    )
    assert status == 2 and "cannot open the secrets already stored" in err
    status, out, _ = await run(other, "list")
    assert status == 0 and "team" in out, "reading needs no key"


@pytest.mark.unit
async def test_a_running_gateway_adopts_what_the_commands_change(tmp_path: Path, run: Run) -> None:
    settings = settings_of(tmp_path / "data", upstream_api_key=API_KEY)
    async with serve(settings) as (client, gateway):
        changes: list[int] = []
        gateway.accounts.on_change(lambda: changes.append(1))
        status, _, _ = await run(
            settings, "add", name="team", kind="oauth_token", secret_env="T", environ={"T": TOKEN}
        )
        assert status == 0
        assert [a["name"] for a in (await client.get("/admin/accounts")).json()["data"]] == [
            "default"
        ], "not before the server refreshes"
        await gateway.accounts.refresh()
        listing = (await client.get("/admin/accounts")).json()["data"]
        assert [a["name"] for a in listing] == ["default", "team"] and changes == [1]
        team = gateway.accounts.find("team")
        assert {u.name: u.secret for u in gateway.accounts.upstreams()}["team"] == TOKEN

        # A cooldown the server knows (and stored), ended from the command line.
        now = time.time()
        gateway.accounts.meter.observe(
            team.id,
            Reading(
                observed_at=now,
                source="answer",
                status="rejected",
                binding="five_hour",
                resets_at=now + 3600,
                windows=(Window("five_hour", 1.0, now + 3600, "rejected"),),
            ),
        )
        await gateway.accounts.flush()
        assert not gateway.accounts.meter.verdict(team.id).usable
        status, out, _ = await run(settings, "list")
        assert "cooling until" in out and "100% used up" in out
        status, out, _ = await run(settings, "show", name="team")
        assert "5-hour window is used up" in out and "plan (read" in out
        status, out, _ = await run(settings, "reset", name="team")
        assert status == 0 and "its cooldown ended" in out
        assert not gateway.accounts.meter.verdict(team.id).usable, "not before the refresh"
        await gateway.accounts.refresh()
        assert gateway.accounts.meter.verdict(team.id).usable
        body = (await client.get("/admin/accounts/team")).json()
        assert body["available"] is True and body["plan"]["cooldown"] is None

        status, _, _ = await run(settings, "disable", name="team")
        await gateway.accounts.refresh()
        assert [u.name for u in gateway.accounts.upstreams()] == ["default"]
        status, _, _ = await run(settings, "set", name="team", new_name="team-2", priority=-1)
        status, _, _ = await run(settings, "enable", name="team-2")
        await gateway.accounts.refresh()
        assert [u.name for u in gateway.accounts.upstreams()] == ["team-2", "default"]
        status, _, _ = await run(settings, "rm", name="team-2")
        await gateway.accounts.refresh()
        assert [a["name"] for a in (await client.get("/admin/accounts")).json()["data"]] == [
            "default"
        ]


@pytest.mark.unit
async def test_the_plan_shows_in_the_table(tmp_path: Path, run: Run) -> None:
    settings = settings_of(tmp_path / "data", upstream_api_key=API_KEY)
    async with serve(settings) as (_, gateway):
        await gateway.accounts.add("team", "oauth_token", secret=TOKEN)
        team = gateway.accounts.find("team")
        now = time.time()
        gateway.accounts.meter.observe(
            team.id,
            Reading(
                observed_at=now,
                source="answer",
                windows=(
                    Window("five_hour", 0.42, now + 3600),
                    Window("seven_day", 0.8, now + 86_400, "warning", 0.75),
                    Window("seven_day_opus", 0.1, now + 86_400),
                ),
            ),
        )
        await gateway.accounts.flush()
    status, out, _ = await run(settings, "list")
    line = next(row for row in out.splitlines() if row.startswith("team"))
    assert "42%, resets" in line and "80% (warning), resets" in line and " 20% " in line
    # Same priority: the most headroom wins, and an API key reports no plan (all headroom).
    assert "a new conversation goes to 'default'" in out
    status, out, _ = await run(settings, "show", name="team")
    assert "7-day Opus:" in out and "10% allowed" in out and "extra usage:   not reported" in out


# --- keys: --plan-share ----------------------------------------------------------------------


@pytest.mark.unit
def test_keys_create_takes_a_plan_share() -> None:
    parser = build_parser()
    args = parser.parse_args(["keys", "create", "bot", "--plan-share", "0.25"])
    assert args.quota_plan_share == 0.25
    for bad in ("1.5", "-0.1", "nan", "half"):
        with pytest.raises(SystemExit) as refused:
            parser.parse_args(["keys", "create", "bot", "--plan-share", bad])
        assert refused.value.code == 2


# --- real subprocesses -------------------------------------------------------------------------


def ccgate(
    data_dir: Path, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m ccgate ARGS --data-dir DATA_DIR`` with no CCGATE_* variables."""
    return subprocess.run(
        [sys.executable, "-m", "ccgate", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        input=stdin if stdin is not None else "",
        env={**ENV, **(env or {})},
        timeout=60,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert_no_secret(result.stdout + result.stderr)
    return result.stdout


@pytest.mark.server
def test_the_commands_as_an_operator_runs_them(tmp_path: Path) -> None:
    data = tmp_path / "data"
    add = ["accounts", "add", "team", "--kind", "oauth_token", "--secret-stdin"]
    out = ok(ccgate(data, *add, stdin=TOKEN + "\n"))
    assert "added account 'team'" in out and "sk-ant-oat01-…abcd" in out
    added = ccgate(
        data,
        "accounts",
        "add",
        "fallback",
        "--kind",
        "api_key",
        "--secret-env",
        "UPSTREAM_FALLBACK",
        "--json",
        env={"UPSTREAM_FALLBACK": API_KEY},
    )
    assert json.loads(ok(added))["priority"] == 100

    plain = ccgate(data, "accounts", "add", "leak", "--kind", "api_key", "--secret", NEW_KEY)
    assert plain.returncode == 2 and "not taken as an argument" in plain.stderr
    assert NEW_KEY not in plain.stdout + plain.stderr, "argparse would have echoed it"
    both = ccgate(
        data, "accounts", "add", "x", "--kind", "api_key", "--secret-stdin", "--secret-env", "V"
    )
    assert both.returncode == 2 and "not allowed with" in both.stderr
    kind = ccgate(data, "accounts", "add", "x", "--kind", "password")
    assert kind.returncode == 2 and "invalid choice: 'password'" in kind.stderr
    missing = ccgate(data, "accounts", "add", "x", "--kind", "api_key")
    assert missing.returncode == 2 and "--secret-env VAR" in missing.stderr
    unknown = ccgate(data, "accounts", "show", "nobody")
    assert unknown.returncode == 1 and "no upstream account 'nobody'" in unknown.stderr
    default = ccgate(data, "accounts", "rm", "default")
    assert default.returncode == 2 and "disable it instead" in default.stderr

    ok(ccgate(data, "accounts", "disable", "team"))
    ok(ccgate(data, "accounts", "set", "fallback", "--priority", "5", "--base-url", "http://h:1"))
    ok(ccgate(data, "accounts", "reset", "fallback"))
    listing = json.loads(ok(ccgate(data, "accounts", "list", "--json")))
    assert [(a["name"], a["enabled"], a["priority"]) for a in listing["data"]] == [
        ("default", True, 0),
        ("team", False, 0),
        ("fallback", True, 5),
    ]
    assert listing["data"][2]["base_url"] == "http://h:1"
    assert listing["data"][2]["plan"]["reset_at"] is not None, "reset was written"
    table = ok(ccgate(data, "accounts", "list"))
    assert table.splitlines()[0].split()[:4] == ["NAME", "KIND", "ENABLED", "STATE"]
    shown = ok(ccgate(data, "accounts", "show", "fallback"))
    assert "sk-ant-api03-…efgh" in shown and "http://h:1" in shown
    ok(ccgate(data, "accounts", "rm", "team"))
    assert "team" not in ok(ccgate(data, "accounts", "list"))

    stored = b"".join(p.read_bytes() for p in sorted(data.glob("ccgate.db*")))
    for secret in SECRETS:
        assert secret.encode() not in stored

    made = ccgate(data, "keys", "create", "bot", "--plan-share", "0.3", "--json")
    assert json.loads(ok(made))["quota"] == {"plan_share": 0.3}
    over = ccgate(data, "keys", "create", "bot", "--plan-share", "1.5")
    assert over.returncode == 2 and "--plan-share" in over.stderr


@pytest.mark.server
def test_a_served_gateway_adopts_a_change_by_itself(tmp_path: Path) -> None:
    settings = settings_of(tmp_path / "data", upstream_api_key=API_KEY)
    gateway = start_gateway(settings, ScriptedRunner(), environ={})
    try:
        add = ["accounts", "add", "team", "--kind", "oauth_token", "--secret-env", "T"]
        ok(ccgate(settings.data_path, *add, env={"T": TOKEN}))

        def names() -> list[str]:
            response = httpx.get(
                gateway.url + "/admin/accounts",
                headers={"authorization": f"Bearer {ADMIN_KEY}"},
                timeout=10,
            )
            assert_no_secret(response.text)
            return [a["name"] for a in response.json()["data"]]

        assert wait_until(lambda: names() == ["default", "team"], within=15)
        ok(ccgate(settings.data_path, "accounts", "disable", "team"))
        state = gateway.state
        assert wait_until(
            lambda: [u.name for u in state.accounts.upstreams()] == ["default"], within=15
        )
    finally:
        gateway.stop()
