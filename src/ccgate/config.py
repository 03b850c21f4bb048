"""One typed Settings object, built from flags, ``CCGATE_*`` variables and ``ccgate.toml``.

Precedence is flag > environment > file > default. Nothing here reads the
process environment on its own: callers pass the mapping they want read
(``os.environ`` in the command line, a dict in tests).
"""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from ccgate.errors import ConfigError
from ccgate.keystrength import MAKE_ONE, weakness

__all__ = [
    "DEFAULT_DATA_DIR",
    "DEMO_DATA_DIR",
    "ENV_PREFIX",
    "Settings",
    "host_name",
    "is_loopback",
    "load_settings",
]

ENV_PREFIX = "CCGATE_"

#: Where ccgate keeps its data unless told otherwise.
DEFAULT_DATA_DIR = Path("~/.ccgate")
#: Where ``--demo`` keeps its data unless told otherwise: never the real setup's directory.
DEMO_DATA_DIR = Path("~/.ccgate-demo")

#: Keys shown in the documentation, refused as real keys.
EXAMPLE_KEYS = frozenset(
    {
        "replace-with-a-long-random-key",
        "replace-with-a-long-random-admin-key-of-32-characters",
        "change-me",
        "changeme",
    }
)

AuthMode = Literal["none", "shared", "multi"]


class Settings(BaseModel):
    """Every setting of ccgate; each field's description is its help text."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field("127.0.0.1", description="Address to bind. Non-loopback needs auth.")
    port: int = Field(8787, ge=0, le=65535, description="Port to bind (0 picks a free one).")
    data_dir: Path = Field(
        DEFAULT_DATA_DIR,
        description="Database, per-worker CLI config dirs, the neutral cwd and ccgate.toml "
        "(mode 0700); with --demo the default is ~/.ccgate-demo.",
    )
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default sqlite:///<data_dir>/ccgate.db."
    )
    database_busy_timeout: float = Field(
        5.0,
        gt=0,
        le=600,
        description="Seconds a request waits for a database another process has locked before "
        "it is refused with 503 database_busy; what a finished turn records waits at most 1 s, "
        "then goes to the journal.",
    )
    redis_url: str | None = Field(
        None,
        description="redis:// URL shared by every replica: rate and quota counters, the response "
        "cache and singleflight, key revocations, where each live turn and loop runs, and loop "
        "leases; unset means one replica, all of that in this process.",
    )
    redis_prefix: str = Field(
        "ccgate:",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="Prefix of every Redis key and channel ccgate uses (several gateways may "
        "share one Redis).",
    )
    redis_outage: Literal["closed", "open"] = Field(
        "closed",
        description="When Redis cannot be reached: closed refuses requests that need the "
        "shared counters (503 shared_state_unavailable); open admits them uncounted, with a "
        "warning logged once a minute.",
    )
    replica_url: str | None = Field(
        None,
        description="How the other replicas reach this one (e.g. http://ccgate-2:8787), to "
        "forward a request for a turn or loop running here; default http://<host>:<port> "
        "(with a wildcard bind, this machine's name).",
    )
    login_token_url: str = Field(
        "https://platform.claude.com/v1/oauth/token",
        pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$",
        max_length=2048,
        description="OAuth token endpoint where, with replicas, one replica at a time renews "
        "the Claude Code login (claude /login) for all of them; Claude Code's own by default "
        "(https, or http on this machine only).",
    )
    upstream_url: str | None = Field(
        None,
        description="Anthropic-compatible base URL the CLI talks to (ANTHROPIC_BASE_URL); "
        "unset means Anthropic's own.",
    )
    upstream_api_key: SecretStr | None = Field(
        None,
        description="Passed to the CLI as ANTHROPIC_API_KEY; unset means the CLI's own login "
        "or CLAUDE_CODE_OAUTH_TOKEN.",
    )
    upstream_retries: int = Field(
        2, ge=0, le=10, description="How often the CLI retries a failed upstream call."
    )
    accounts_key: SecretStr | None = Field(
        None,
        description="Encrypts the upstream accounts' secrets in the database; unset means a "
        "random key in <data_dir>/accounts.key.",
    )
    account_routing: Literal["headroom", "priority"] = Field(
        "headroom",
        description="Where a new conversation goes: the account with most plan headroom "
        "(among the lowest priority number), or strictly the priority order.",
    )
    allow_extra_usage: bool = Field(
        False,
        description="Let requests be billed as extra usage once an account's plan is used up; "
        "off routes elsewhere or answers 429 plan_limit.",
    )
    plan_share_at: float = Field(
        0.8,
        ge=0,
        le=1,
        description="A key's plan_share is enforced once the account's 5-hour window is this "
        "full (0-1).",
    )
    plan_warnings: tuple[float, ...] = Field(
        (0.75, 0.9),
        description="Utilisations of an account's windows that raise a plan.warning "
        "(console, webhook, log; comma-separated in the environment).",
    )
    plan_probe_interval: float = Field(
        0.0,
        ge=0,
        description="Read an idle subscription account's plan with a tiny request when its "
        "last reading is this old (seconds); 0 never probes.",
    )
    structured_output_attempts: int = Field(
        3,
        ge=1,
        le=10,
        description="How many answers the model may give in one turn to match a structured "
        "output schema before the request fails (structured_output_failed).",
    )
    usage_shows_plan: bool = Field(
        False,
        description="Show key holders the accounts' plan headroom (percentages and reset "
        "times) in GET /v1/usage.",
    )
    auth_mode: AuthMode = Field(
        "none", description="none (loopback only), shared (one api_key) or multi (keys in the DB)."
    )
    api_key: SecretStr | None = Field(
        None, description="The client key of auth_mode=shared (a random key, not a phrase)."
    )
    admin_key: SecretStr | None = Field(
        None,
        description="The key of the admin API (/admin/*), which also reads /metrics (a random "
        "key); unset turns the admin API off.",
    )
    metrics_token: SecretStr | None = Field(
        None,
        description="A token that reads /metrics and nothing else (a random key), for a "
        "Prometheus scraper.",
    )
    allowed_hosts: tuple[str, ...] = Field(
        (),
        description="Host names the gateway answers to besides its loopback names and the "
        "bound address (comma-separated in the environment; * for any). Needed for a name "
        "a reverse proxy passes on; on a network address unset means any.",
    )
    max_concurrent: int = Field(4, ge=1, le=256, description="Live CLI turns at once.")
    max_queue: int = Field(16, ge=0, le=10_000, description="Requests waiting for a turn slot.")
    request_timeout: float = Field(600.0, gt=0, description="Whole-turn bound in seconds.")
    tool_result_timeout: float = Field(
        600.0,
        gt=0,
        description="How long a turn waits, alive, for the client's tool results (seconds); "
        "results that come later still reach the model through the session.",
    )
    loops_dir: Path | None = Field(
        None,
        description="Where loop workspaces live (<loops_dir>/<loop id>/workspace); default "
        "<data_dir>/loops.",
    )
    loop_idle_timeout: float = Field(
        600.0,
        gt=0,
        description="Seconds a loop keeps its Claude Code process without a turn; the next "
        "message then starts one that resumes the loop's session.",
    )
    choice_timeout: float = Field(
        1800.0,
        gt=0,
        description="Seconds a loop's permission or question waits for an answer before it "
        "counts as denied.",
    )
    session_keepalive: float = Field(
        300.0,
        ge=0,
        description="Seconds a conversation's Claude Code process stays alive after a turn, so "
        "its next turn needs no start-up (0 ends it after every turn).",
    )
    pool_max_processes: int = Field(
        4,
        ge=0,
        le=256,
        description="Pre-started Claude Code processes kept ready for new conversations of "
        "the configurations in use (0 turns the pool off).",
    )
    pool_memory_mb: int = Field(
        2048,
        ge=0,
        description="Memory (MB) that idle Claude Code processes (warm conversations and the "
        "pool) may hold; beyond it the oldest idle ones are ended.",
    )
    session_continuation: bool = Field(
        True,
        description="Continue a known conversation's Claude Code session; off rebuilds the "
        "session from the client's history on every request.",
    )
    shutdown_timeout: float = Field(
        10.0, gt=0, description="On SIGTERM/SIGINT, how long running turns may finish (seconds)."
    )
    session_ttl: float = Field(86_400.0, gt=0, description="Idle conversation expiry (seconds).")
    console: bool = Field(
        True, description="Serve the web console at / (sign in with a key; open with auth none)."
    )
    webhook_urls: tuple[str, ...] = Field(
        (),
        description="URLs that get the console's events as signed JSON POSTs: "
        "choice.pending, turn.failed, quota.exceeded, upstream.unhealthy "
        "(comma-separated in the environment).",
    )
    webhook_secret: SecretStr | None = Field(
        None,
        description="The key of the webhooks' HMAC-SHA256 signature; needed with webhook_urls.",
    )
    console_session_ttl: float = Field(
        43_200.0,
        ge=60,
        le=30 * 86_400,
        description="How long a console sign-in lasts before the key is asked for again (seconds).",
    )
    default_model: str = Field("sonnet", description="The model when a request names none.")
    max_body_bytes: int = Field(
        32 * 1024 * 1024, ge=1024, description="Largest request body accepted (bytes)."
    )
    usage_ledger: bool = Field(
        True,
        description="Record every request (tokens, cost, timing, status) in the usage ledger; "
        "off keeps no per-request records (quota counters still count).",
    )
    cache_ttl: float = Field(
        0.0,
        ge=0,
        description="Seconds a stateless, tool-free answer is reused for the same key's "
        "identical request (0 turns the response cache and singleflight off).",
    )
    cache_max_entries: int = Field(
        1000, ge=1, le=1_000_000, description="Answers the response cache keeps at most."
    )
    metrics_per_key: bool = Field(
        False, description="Label /metrics series with the key's name (auth_mode=multi)."
    )
    health_probe_ttl: float = Field(
        60.0, ge=0, description="How long /health/auth reuses a probe result (seconds)."
    )
    cli_path: Path | None = Field(
        None, description="A Claude Code binary to use instead of the bundled one."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Least severe log level written."
    )
    demo: bool = Field(False, description="Serve the built-in scripted model as upstream.")

    @field_validator("plan_warnings", mode="before")
    @classmethod
    def _split_numbers(cls, value: Any) -> Any:
        """Read ``0.75,0.9`` (environment, flag) or a list (config file); each in (0, 1]."""
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list | tuple):
            numbers = sorted({float(v) for v in value})
            if any(not 0 < n <= 1 for n in numbers):
                raise ValueError("plan warnings are utilisations between 0 and 1, e.g. 0.75,0.9")
            return tuple(numbers)
        return value

    @field_validator("webhook_urls", mode="before")
    @classmethod
    def _split_urls(cls, value: Any) -> Any:
        """Read ``a,b`` (environment, flag) or a list (config file); each an http(s) URL."""
        if isinstance(value, str):
            value = [part for part in value.split(",") if part.strip()]
        if not isinstance(value, list | tuple):
            return value
        urls = []
        for raw in value:
            url = str(raw).strip()
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(
                    f"{url[:80]!r} is not an http(s) URL: give webhook URLs such as "
                    "https://hooks.example.com/ccgate"
                )
            urls.append(url)
        return tuple(urls)

    @field_validator("login_token_url")
    @classmethod
    def _secure_token_url(cls, value: str) -> str:
        """Refresh tokens travel over https, or stay on this machine."""
        parts = urlsplit(value)
        if parts.scheme != "https" and not is_loopback(parts.hostname or ""):
            raise ValueError(
                "login_token_url sends the login's refresh token: give an https:// URL "
                "(http:// only on this machine, e.g. http://127.0.0.1:9000/v1/oauth/token)"
            )
        return value

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: Any) -> Any:
        """Read ``a,b`` (environment, flag) or a list (config file); check every name."""
        if isinstance(value, str):
            value = value.split(",")
        if not isinstance(value, list | tuple):
            return value
        names: list[str] = []
        for raw in value:
            entry = str(raw).strip().lower()
            if not entry:
                continue
            name = "*" if entry == "*" else host_name(entry)
            if name is None or "/" in entry or (name != "*" and _has_port(entry)):
                raise ValueError(
                    f"{entry!r} is not a host name: list names or addresses without a scheme "
                    "or port (any port matches), e.g. gateway.example.com,192.168.1.5"
                )
            names.append(name)
        return tuple(names)

    @property
    def data_path(self) -> Path:
        """Return the data directory with ``~`` expanded."""
        return self.data_dir.expanduser()

    @property
    def loops_path(self) -> Path:
        """Return the directory of loop workspaces."""
        return (self.loops_dir or self.data_path / "loops").expanduser()

    @property
    def effective_database_url(self) -> str:
        """Return ``database_url`` or the embedded SQLite default."""
        return self.database_url or f"sqlite:///{self.data_path / 'ccgate.db'}"

    def secrets(self) -> list[str]:
        """Return every ccgate secret value that is set (to keep them out of the CLI)."""
        values = [
            self.api_key,
            self.admin_key,
            self.metrics_token,
            self.webhook_secret,
            self.accounts_key,
        ]
        return [v.get_secret_value() for v in values if v is not None and v.get_secret_value()]

    @model_validator(mode="after")
    def _refuse_unsafe(self) -> Settings:
        """Refuse settings ccgate must not run with; the message says how to fix it."""
        if self.auth_mode == "none" and not is_loopback(self.host):
            raise ValueError(
                f"refusing to listen on {self.host} with auth_mode=none: anyone on the network "
                "could use your Claude account. Set CCGATE_AUTH_MODE=shared and "
                "CCGATE_API_KEY=<a long random key> (or --auth-mode shared --api-key ...), "
                "or bind to 127.0.0.1."
            )
        if self.auth_mode == "shared" and self.api_key is None:
            raise ValueError(
                "auth_mode=shared needs api_key: set CCGATE_API_KEY to the output of "
                f"{MAKE_ONE} (or pass --api-key)."
            )
        if self.webhook_urls and self.webhook_secret is None:
            raise ValueError(
                "webhook_urls needs webhook_secret (receivers check the signature with it): "
                f"set CCGATE_WEBHOOK_SECRET to the output of {MAKE_ONE}."
            )
        keys = (
            ("api_key", self.api_key if self.auth_mode == "shared" else None),
            ("webhook_secret", self.webhook_secret),
            ("admin_key", self.admin_key),
            ("metrics_token", self.metrics_token),
        )
        for name, secret in keys:
            if secret is not None:
                _check_key(name, secret.get_secret_value())
        return self


def _check_key(name: str, value: str) -> None:
    """Refuse a key that is an example from the documentation or easy to guess."""
    fix = f"set {ENV_PREFIX}{name.upper()} to the output of {MAKE_ONE}"
    if value.lower() in EXAMPLE_KEYS:
        raise ValueError(f"{name} is an example from the documentation: {fix}.")
    problem = weakness(value)
    if problem is not None:
        raise ValueError(f"{name} is refused, {problem}: {fix}.")


def host_name(authority: str) -> str | None:
    """Return the host of ``authority`` (``name``, ``name:port``, ``[v6]:port``), lowercased
    and without a trailing dot, or None when it is malformed."""
    text = authority.strip().lower()
    if text.startswith("["):
        end = text.find("]")
        rest = text[end + 1 :]
        if end == -1 or (rest and not (rest[:1] == ":" and rest[1:].isdigit())):
            return None
        return text[1:end] or None
    name, colon, port = text.partition(":")
    if colon and not port.isdigit():
        return None  # a bare IPv6 address is not a Host; a port is digits
    name = name.rstrip(".")
    return name or None


def _has_port(authority: str) -> bool:
    text = authority.strip()
    return text.rpartition("]")[2].startswith(":") if text.startswith("[") else ":" in text


def is_loopback(host: str) -> bool:
    """Tell whether ``host`` names only this machine."""
    if host in {"localhost", "localhost.localdomain"}:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _coerce_env(name: str, raw: str) -> Any:
    field = Settings.model_fields[name]
    if field.annotation is bool:
        lowered = raw.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off", ""}:
            return False
    if raw == "" and not field.is_required() and field.default is None:
        return None
    return raw


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    section = data.get("ccgate", data)
    if not isinstance(section, dict):
        raise ConfigError(f"config file {path}: [ccgate] must be a table")
    unknown = sorted(set(section) - set(Settings.model_fields))
    if unknown:
        raise ConfigError(f"config file {path}: unknown setting(s) {', '.join(unknown)}")
    return dict(section)


def load_settings(
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    config_path: Path | None = None,
) -> Settings:
    """Build Settings from flags, an environment mapping and a TOML file, and check them.

    ``flags`` holds only what the user gave (``None`` values are skipped). The
    file is ``config_path`` or ``ccgate.toml`` in the data directory. Without a
    ``data_dir``, ``demo`` uses :data:`DEMO_DATA_DIR`, so that trying ccgate
    leaves nothing in the directory a real setup will use.
    """
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    environ = environ or {}
    env_values = {
        name: _coerce_env(name, environ[ENV_PREFIX + name.upper()])
        for name in Settings.model_fields
        if ENV_PREFIX + name.upper() in environ
    }
    if config_path is None and ENV_PREFIX + "CONFIG" in environ:
        config_path = Path(environ[ENV_PREFIX + "CONFIG"])
    if config_path is None:
        demo = bool(flags.get("demo") or env_values.get("demo"))
        default = DEMO_DATA_DIR if demo else DEFAULT_DATA_DIR
        data_dir = flags.get("data_dir") or env_values.get("data_dir") or default
        config_path = Path(str(data_dir)).expanduser() / "ccgate.toml"
    elif not config_path.exists():
        raise ConfigError(f"config file {config_path} does not exist")
    merged = {**_read_file(config_path), **env_values, **flags}
    try:
        settings = Settings.model_validate(merged)
        if settings.demo and not merged.get("data_dir"):
            settings = Settings.model_validate({**merged, "data_dir": DEMO_DATA_DIR})
    except ValidationError as exc:
        raise ConfigError(_explain(exc)) from None
    return settings


def _explain(exc: ValidationError) -> str:
    """Say what is wrong with the settings: per field, or the whole refusal as written."""
    fields: list[str] = []
    for err in exc.errors():
        if not err["loc"]:  # the model's own check: its message stands alone
            return str(err["ctx"]["error"]) if "ctx" in err else err["msg"]
        fields.append(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}")
    return f"invalid settings: {'; '.join(fields)}"
