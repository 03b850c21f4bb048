"""The exception tree and the mapping of turn errors to them."""

from __future__ import annotations

import pytest

from ccgate.api.errors import error_for_turn
from ccgate.engine.events import ErrorKind, TurnError
from ccgate.errors import (
    RETRY_AFTER_MAX,
    AuthenticationFailed,
    CLICrashed,
    GatewayError,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    PlanLimited,
    QueueFull,
    RateLimited,
    RequestTooLarge,
    TurnTimeout,
    UpstreamAuthError,
    UpstreamBillingError,
    UpstreamError,
    UpstreamOverloaded,
    UpstreamRateLimited,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("kind", "cls", "status", "openai_status", "openai_type", "anthropic_type"),
    [
        (
            "authentication",
            UpstreamAuthError,
            401,
            401,
            "authentication_error",
            "authentication_error",
        ),
        ("billing", UpstreamBillingError, 402, 402, "insufficient_quota", "billing_error"),
        ("rate_limit", UpstreamRateLimited, 429, 429, "rate_limit_error", "rate_limit_error"),
        ("overloaded", UpstreamOverloaded, 529, 503, "server_error", "overloaded_error"),
        (
            "invalid_request",
            InvalidRequest,
            400,
            400,
            "invalid_request_error",
            "invalid_request_error",
        ),
        ("timeout", TurnTimeout, 504, 504, "timeout", "api_error"),
        ("cli_crashed", CLICrashed, 502, 502, "server_error", "api_error"),
        ("upstream", UpstreamError, 502, 502, "server_error", "api_error"),
    ],
)
def test_error_for_turn(
    kind: ErrorKind,
    cls: type[GatewayError],
    status: int,
    openai_status: int,
    openai_type: str,
    anthropic_type: str,
) -> None:
    error = error_for_turn(TurnError(kind, "detail-text"))
    assert type(error) is cls
    assert error.status == status
    assert (error.openai_status or error.status) == openai_status
    assert error.openai_type == openai_type
    assert error.anthropic_type == anthropic_type
    assert "detail-text" in error.message


def test_auth_error_says_how_to_log_in() -> None:
    error = error_for_turn(TurnError("authentication", "401 invalid x-api-key"))
    assert "claude /login" in error.message
    assert "CCGATE_UPSTREAM_API_KEY" in error.message
    assert error.headers() == {"x-should-retry": "false"}


def test_rate_limit_carries_retry_after() -> None:
    error = error_for_turn(TurnError("rate_limit", "slow", retry_after=12.4))
    assert error.headers() == {
        "retry-after": "12",
        "x-should-retry": "true",
        "x-ccgate-limit": "upstream",
    }


def test_a_plan_limit_names_itself_and_caps_retry_after() -> None:
    soon = error_for_turn(TurnError("plan_limit", "extra_usage: nothing left", retry_after=42))
    assert isinstance(soon, PlanLimited) and soon.code == "plan_limit"
    assert soon.param == "extra_usage" and soon.loop_code == "plan_limit"
    assert soon.message == "Plan limit (extra_usage): nothing left"
    assert soon.headers() == {
        "retry-after": "42",
        "x-should-retry": "true",
        "x-ccgate-limit": "extra_usage",
    }
    later = error_for_turn(TurnError("plan_limit", "plan_window: full", retry_after=7200))
    assert later.headers() == {
        "retry-after": str(RETRY_AFTER_MAX),
        "x-should-retry": "false",
        "x-ccgate-limit": "plan_window",
    }


def test_overloaded_should_retry() -> None:
    assert error_for_turn(TurnError("overloaded", "busy")).headers()["x-should-retry"] == "true"


@pytest.mark.parametrize(
    ("error", "status", "should_retry"),
    [
        (InvalidRequest("x"), 400, "false"),
        (AuthenticationFailed("x"), 401, "false"),
        (PermissionDenied("x"), 403, "false"),
        (NotFound("x"), 404, "false"),
        (RequestTooLarge("x"), 413, "false"),
        (RateLimited("x"), 429, "true"),
        (QueueFull("x", retry_after=2), 429, "true"),
        (UpstreamBillingError("x"), 402, "false"),
    ],
)
def test_status_and_should_retry(error: GatewayError, status: int, should_retry: str) -> None:
    assert error.status == status
    assert error.headers()["x-should-retry"] == should_retry


def test_headers_retry_after_rounding() -> None:
    assert QueueFull("x", retry_after=0.2).headers()["retry-after"] == "1"
    assert QueueFull("x", retry_after=2.6).headers()["retry-after"] == "3"
    assert "retry-after" not in QueueFull("x").headers()
    assert GatewayError("x").headers() == {}


def test_tree_and_codes() -> None:
    assert issubclass(QueueFull, RateLimited)
    cls: type[GatewayError]
    for cls in (
        UpstreamAuthError,
        UpstreamBillingError,
        UpstreamRateLimited,
        UpstreamOverloaded,
        TurnTimeout,
        CLICrashed,
    ):
        assert issubclass(cls, UpstreamError)
    for cls in (InvalidRequest, NotFound, RateLimited, UpstreamError):
        assert issubclass(cls, GatewayError)
    assert QueueFull("x").code == "gateway_busy"
    assert NotFound("x", code="model_not_found").code == "model_not_found"
    assert NotFound("y").code == "not_found"
    error = InvalidRequest("bad", param="stop")
    assert (error.message, error.param, str(error)) == ("bad", "stop", "bad")


def test_no_builtin_names_shadowed() -> None:
    import builtins

    import ccgate.errors as errors

    assert not set(errors.__all__) & set(dir(builtins))
