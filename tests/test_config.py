"""Settings: precedence, coercion, the config file, refusals and secret handling."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from ccgate.config import Settings, is_loopback, load_settings
from ccgate.errors import ConfigError

pytestmark = pytest.mark.unit

KEY = "ODJsQZouryY4bDJfGhsouykIrjUZJZ8OGJdmbpcJXpc"  # secrets.token_urlsafe(32)
CLIENT_SECRET = "client-secret-HpBcZIbcabB0RBaSqtXebJ0BFc5lWNH6"
ADMIN_SECRET = "admin-secret-g4JMEYN_SS1ICd_6gd7_z90RPPuBwvrCdjRT"


def _load(tmp_path: Path, flags: dict[str, Any] | None = None, /, **env: str) -> Settings:
    return load_settings({"data_dir": tmp_path, **(flags or {})}, env)


def test_defaults(tmp_path: Path) -> None:
    settings = _load(tmp_path)
    assert settings.host == "127.0.0.1"
    assert settings.port == 8787
    assert settings.auth_mode == "none"
    assert settings.max_concurrent == 4
    assert settings.max_queue == 16
    assert settings.request_timeout == 600
    assert settings.session_ttl == 86_400
    assert settings.default_model == "sonnet"
    assert settings.demo is False
    assert settings.effective_database_url == f"sqlite:///{tmp_path / 'ccgate.db'}"


def test_flag_beats_env_beats_file_beats_default(tmp_path: Path) -> None:
    (tmp_path / "ccgate.toml").write_text("port = 1111\nmax_queue = 3\nmax_concurrent = 7\n")
    settings = load_settings(
        {"data_dir": tmp_path, "port": 3333},
        {"CCGATE_PORT": "2222", "CCGATE_MAX_QUEUE": "5"},
    )
    assert settings.port == 3333  # flag
    assert settings.max_queue == 5  # env over file
    assert settings.max_concurrent == 7  # file over default
    assert settings.default_model == "sonnet"  # default


def test_none_flags_are_skipped(tmp_path: Path) -> None:
    settings = load_settings({"data_dir": tmp_path, "port": None}, {"CCGATE_PORT": "2222"})
    assert settings.port == 2222


def test_data_dir_from_env_locates_file(tmp_path: Path) -> None:
    (tmp_path / "ccgate.toml").write_text("default_model = 'opus'\n")
    settings = load_settings({}, {"CCGATE_DATA_DIR": str(tmp_path)})
    assert settings.default_model == "opus"
    assert settings.data_path == tmp_path


def test_ccgate_table_in_file(tmp_path: Path) -> None:
    (tmp_path / "ccgate.toml").write_text("[ccgate]\nport = 4444\nlog_level = 'debug'\n")
    settings = _load(tmp_path)
    assert settings.port == 4444
    assert settings.log_level == "debug"


def test_explicit_config_path(tmp_path: Path) -> None:
    path = tmp_path / "elsewhere.toml"
    path.write_text("port = 5555\n")
    settings = load_settings({"data_dir": tmp_path / "data"}, {}, path)
    assert settings.port == 5555


def test_config_path_from_env(tmp_path: Path) -> None:
    path = tmp_path / "elsewhere.toml"
    path.write_text("port = 5556\n")
    settings = load_settings({"data_dir": tmp_path}, {"CCGATE_CONFIG": str(path)})
    assert settings.port == 5556


def test_missing_explicit_config_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings({"data_dir": tmp_path}, {}, tmp_path / "nope.toml")


def test_unknown_file_key_refused(tmp_path: Path) -> None:
    (tmp_path / "ccgate.toml").write_text("port = 1\nbogus_setting = 2\n")
    with pytest.raises(ConfigError, match="bogus_setting"):
        _load(tmp_path)


def test_unknown_key_in_table_refused(tmp_path: Path) -> None:
    (tmp_path / "ccgate.toml").write_text("[ccgate]\nprot = 1\n")
    with pytest.raises(ConfigError, match="prot"):
        _load(tmp_path)


def test_broken_toml_refused(tmp_path: Path) -> None:
    (tmp_path / "ccgate.toml").write_text("port = = 1\n")
    with pytest.raises(ConfigError, match="ccgate.toml"):
        _load(tmp_path)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", True),
        ("true", True),
        ("TRUE", True),
        ("yes", True),
        ("on", True),
        ("0", False),
        ("false", False),
        ("no", False),
        ("off", False),
        ("", False),
    ],
)
def test_bool_env_coercion(tmp_path: Path, raw: str, expected: bool) -> None:
    assert _load(tmp_path, CCGATE_DEMO=raw).demo is expected


def test_bad_bool_env_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="demo"):
        _load(tmp_path, CCGATE_DEMO="perhaps")


@pytest.mark.parametrize(("flags", "env"), [({"demo": True}, {}), ({}, {"CCGATE_DEMO": "1"})])
def test_demo_keeps_its_data_out_of_the_real_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flags: dict[str, Any], env: dict[str, str]
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ccgate").mkdir()
    (tmp_path / ".ccgate" / "ccgate.toml").write_text("port = 1111\n")
    (tmp_path / ".ccgate-demo").mkdir()
    (tmp_path / ".ccgate-demo" / "ccgate.toml").write_text("port = 2222\n")
    settings = load_settings(flags, env)
    assert settings.data_path == tmp_path / ".ccgate-demo"
    assert settings.port == 2222  # its own config file, not the real setup's
    assert load_settings({}, {}).data_path == tmp_path / ".ccgate"


def test_demo_uses_a_data_dir_that_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    given = tmp_path / "given"
    assert load_settings({"demo": True, "data_dir": given}, {}).data_path == given
    from_env = load_settings({"demo": True}, {"CCGATE_DATA_DIR": str(given)})
    assert from_env.data_path == given
    (given / "ccgate.toml").parent.mkdir()
    (given / "ccgate.toml").write_text(f"demo = true\ndata_dir = '{given}'\n")
    assert load_settings({}, {"CCGATE_CONFIG": str(given / "ccgate.toml")}).data_path == given
    (given / "ccgate.toml").write_text("demo = true\n")  # demo named by a file only
    named = load_settings({}, {"CCGATE_CONFIG": str(given / "ccgate.toml")})
    assert named.demo and named.data_path == tmp_path / "home" / ".ccgate-demo"


def test_empty_env_for_optional_setting_is_unset(tmp_path: Path) -> None:
    (tmp_path / "ccgate.toml").write_text("upstream_url = 'http://file.example'\n")
    settings = _load(tmp_path, CCGATE_UPSTREAM_URL="", CCGATE_UPSTREAM_API_KEY="")
    assert settings.upstream_url is None
    assert settings.upstream_api_key is None


def test_numeric_env_parsed(tmp_path: Path) -> None:
    settings = _load(tmp_path, CCGATE_PORT="9000", CCGATE_REQUEST_TIMEOUT="1.5")
    assert settings.port == 9000
    assert settings.request_timeout == 1.5


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"CCGATE_PORT": "eighty"}, "port"),
        ({"CCGATE_PORT": "70000"}, "port"),
        ({"CCGATE_MAX_CONCURRENT": "0"}, "max_concurrent"),
        ({"CCGATE_AUTH_MODE": "open"}, "auth_mode"),
        ({"CCGATE_LOG_LEVEL": "loud"}, "log_level"),
    ],
)
def test_invalid_values_give_readable_config_error(
    tmp_path: Path, env: dict[str, str], name: str
) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, **env)
    message = str(info.value)
    assert name in message
    assert "Traceback" not in message
    assert "pydantic" not in message.lower()


def test_unknown_flag_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nonsense"):
        _load(tmp_path, {"nonsense": 1})


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "::", "example.com"])
def test_public_host_without_auth_refused_with_fix(tmp_path: Path, host: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, {"host": host})
    message = str(info.value)
    assert host in message
    assert "CCGATE_AUTH_MODE" in message
    assert "CCGATE_API_KEY" in message


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "[::1]", "localhost", "127.0.0.2"])
def test_loopback_hosts_allowed_without_auth(tmp_path: Path, host: str) -> None:
    assert is_loopback(host)
    assert _load(tmp_path, {"host": host}).host == host


def test_the_model_itself_refuses_unsafe_settings() -> None:
    """Validation lives in Settings, not in a step a caller could skip."""
    with pytest.raises(ValidationError, match="refusing to listen on 0.0.0.0"):
        Settings.model_validate({"host": "0.0.0.0"})
    with pytest.raises(ValidationError, match="auth_mode=shared needs api_key"):
        Settings.model_validate({"auth_mode": "shared"})
    with pytest.raises(ValidationError, match="admin_key is refused"):
        Settings.model_validate({"admin_key": "a" * 32})


def test_a_refusal_reads_as_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, {"host": "0.0.0.0"})
    assert str(info.value).startswith("refusing to listen on 0.0.0.0 with auth_mode=none")


def test_public_host_with_shared_auth_allowed(tmp_path: Path) -> None:
    settings = _load(tmp_path, CCGATE_HOST="0.0.0.0", CCGATE_AUTH_MODE="shared", CCGATE_API_KEY=KEY)
    assert settings.host == "0.0.0.0"
    assert settings.auth_mode == "shared"


def test_shared_mode_needs_api_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="CCGATE_API_KEY"):
        _load(tmp_path, CCGATE_AUTH_MODE="shared")


@pytest.mark.parametrize(
    "weak",
    ["a" * 32, "password" * 4, "0" * 32, "short-key", "abcdefghijklmnopqrstuvwxyz0123456789"],
)
@pytest.mark.parametrize(
    ("name", "mode"), [("api_key", "shared"), ("admin_key", "multi"), ("metrics_token", "multi")]
)
def test_weak_keys_are_refused_with_how_to_make_one(
    tmp_path: Path, name: str, mode: str, weak: str
) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, {"auth_mode": mode, name: weak})
    message = str(info.value)
    assert f"{name} is refused" in message and "too easy to guess" in message
    assert f"CCGATE_{name.upper()}" in message
    assert "secrets.token_urlsafe(32)" in message
    assert weak not in message  # never echoed, even a weak one


@pytest.mark.parametrize("name", ["api_key", "admin_key", "metrics_token"])
def test_random_keys_are_accepted(tmp_path: Path, name: str) -> None:
    settings = _load(tmp_path, {"auth_mode": "shared", "api_key": KEY, name: KEY})
    assert getattr(settings, name).get_secret_value() == KEY


def test_an_unused_api_key_is_not_judged(tmp_path: Path) -> None:
    assert _load(tmp_path, {"auth_mode": "multi", "api_key": "a" * 32}).api_key


@pytest.mark.parametrize(
    ("name", "example"),
    [
        ("admin_key", "replace-with-a-long-random-admin-key-of-32-characters"),
        ("api_key", "replace-with-a-long-random-key"),
        ("api_key", "CHANGE-ME"),
    ],
)
def test_documented_examples_are_refused(tmp_path: Path, name: str, example: str) -> None:
    with pytest.raises(ConfigError, match=f"{name} is an example from the documentation"):
        _load(tmp_path, {"auth_mode": "shared", "api_key": KEY, name: example})


def test_secrets_lists_set_client_secrets(tmp_path: Path) -> None:
    settings = _load(
        tmp_path,
        CCGATE_AUTH_MODE="shared",
        CCGATE_API_KEY=CLIENT_SECRET,
        CCGATE_ADMIN_KEY=ADMIN_SECRET,
        CCGATE_METRICS_TOKEN=KEY,
        CCGATE_UPSTREAM_API_KEY="upstream-0123456789",
    )
    assert sorted(settings.secrets()) == sorted([ADMIN_SECRET, CLIENT_SECRET, KEY])
    assert _load(tmp_path).secrets() == []


def test_secret_values_never_in_repr(tmp_path: Path) -> None:
    settings = _load(
        tmp_path,
        CCGATE_AUTH_MODE="shared",
        CCGATE_API_KEY=CLIENT_SECRET,
        CCGATE_ADMIN_KEY=ADMIN_SECRET,
        CCGATE_METRICS_TOKEN="metrics-token-" + KEY,
        CCGATE_UPSTREAM_API_KEY="upstream-secret-0123456789",
    )
    for text in (repr(settings), str(settings), settings.model_dump_json()):
        assert "client-secret" not in text
        assert "admin-secret" not in text
        assert "upstream-secret" not in text
        assert "metrics-token" not in text
    assert settings.upstream_api_key is not None
    assert settings.upstream_api_key.get_secret_value() == "upstream-secret-0123456789"


def test_settings_are_frozen(tmp_path: Path) -> None:
    settings = _load(tmp_path)
    with pytest.raises(ValueError):
        settings.port = 1


def test_every_setting_has_help_text() -> None:
    for name, field in Settings.model_fields.items():
        assert field.description, name


def test_webhooks_need_http_urls_and_a_strong_secret(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="webhook_urls needs webhook_secret"):
        _load(tmp_path, CCGATE_WEBHOOK_URLS="https://hooks.example.com/a")
    with pytest.raises(ConfigError, match="is not an http"):
        _load(tmp_path, CCGATE_WEBHOOK_URLS="ftp://x/y", CCGATE_WEBHOOK_SECRET=KEY)
    with pytest.raises(ConfigError, match="webhook_secret is refused"):
        _load(tmp_path, CCGATE_WEBHOOK_URLS="https://h.example/a", CCGATE_WEBHOOK_SECRET="a" * 32)
    settings = _load(
        tmp_path,
        CCGATE_WEBHOOK_URLS="https://a.example/x, http://127.0.0.1:9000/y",
        CCGATE_WEBHOOK_SECRET=KEY,
    )
    assert settings.webhook_urls == ("https://a.example/x", "http://127.0.0.1:9000/y")
    assert KEY in settings.secrets()
