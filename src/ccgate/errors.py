"""The one exception tree of ccgate.

Every error a client can see is a :class:`GatewayError`; each class knows its
HTTP status and its error type on each wire protocol, and the protocol
renderers (``protocol.openai.render_error``, ``protocol.anthropic.render_error``)
turn it into that protocol's shape::

    GatewayError                      500  server error
    ├── ConfigError                        refused settings (start-up only)
    ├── InvalidRequest                400  malformed or meaningless input
    │   └── MethodNotAllowed          405  the route exists, not with this method
    ├── AuthenticationFailed          401  missing or wrong client key
    ├── PermissionDenied              403  key not allowed to do this
    ├── NotFound                      404  unknown model or object
    │   └── RouteNotFound             404  no such route (a base URL or path mistake)
    ├── Conflict                      409  the request conflicts with an earlier one
    ├── MisdirectedRequest            421  a Host this gateway does not answer to
    ├── RequestTooLarge               413  body over ``max_body_bytes``
    ├── ClientGone                    499  the client left before the answer
    ├── RateLimited                   429  a limit of this gateway
    │   ├── QueueFull                 429  every slot busy and the queue full
    │   └── QuotaExceeded             429  a limit of the caller's key
    ├── Unavailable                   503  ccgate cannot take the request now
    │   └── DatabaseBusy              503  the database stayed locked by another process
    └── UpstreamError                 502  the model side failed
        ├── UpstreamAuthError         401  Claude Code's credentials rejected
        ├── UpstreamBillingError      402  the upstream account cannot pay
        ├── UpstreamRateLimited       429  the upstream said slow down
        ├── UpstreamOverloaded        529  the upstream is overloaded
        ├── TurnTimeout               504  the turn outlived ``request_timeout``
        └── CLICrashed                502  the Claude Code process died
"""

from __future__ import annotations

__all__ = [
    "AuthenticationFailed",
    "CLICrashed",
    "ClientGone",
    "ConfigError",
    "Conflict",
    "DatabaseBusy",
    "GatewayError",
    "InvalidRequest",
    "MethodNotAllowed",
    "MisdirectedRequest",
    "NotFound",
    "PermissionDenied",
    "QueueFull",
    "QuotaExceeded",
    "RateLimited",
    "RequestTooLarge",
    "RouteNotFound",
    "TurnTimeout",
    "Unavailable",
    "UpstreamAuthError",
    "UpstreamBillingError",
    "UpstreamError",
    "UpstreamOverloaded",
    "UpstreamRateLimited",
]


class GatewayError(Exception):
    """Base of every error ccgate reports; carries what each protocol needs to render it."""

    status: int = 500
    #: The status on the OpenAI-compatible API, where it differs (529 is Anthropic's own).
    openai_status: int | None = None
    openai_type: str = "server_error"
    anthropic_type: str = "api_error"
    code: str | None = None
    #: Whether a client should retry the same request later (``x-should-retry``).
    should_retry: bool | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        """Return the HTTP headers that go with this error."""
        headers: dict[str, str] = {}
        if self.retry_after is not None:
            headers["retry-after"] = str(max(1, round(self.retry_after)))
        if self.should_retry is not None:
            headers["x-should-retry"] = "true" if self.should_retry else "false"
        return headers


class ConfigError(GatewayError):
    """Settings that ccgate refuses to start with."""


class InvalidRequest(GatewayError):
    """The request is malformed, or asks for something ccgate cannot honour."""

    status = 400
    openai_type = "invalid_request_error"
    anthropic_type = "invalid_request_error"
    should_retry = False


class MethodNotAllowed(InvalidRequest):
    """The route exists but does not take this method; ``allow`` lists those it takes."""

    status = 405
    code = "method_not_allowed"

    def __init__(self, message: str, *, allow: list[str]) -> None:
        super().__init__(message)
        self.allow = allow

    def headers(self) -> dict[str, str]:
        """Return the error's headers, with ``Allow`` (RFC 9110 requires it on a 405)."""
        return {**super().headers(), "allow": ", ".join(self.allow)}


class AuthenticationFailed(GatewayError):
    """The client's key is missing or wrong."""

    status = 401
    openai_type = "authentication_error"
    anthropic_type = "authentication_error"
    code = "invalid_api_key"
    should_retry = False


class PermissionDenied(GatewayError):
    """The client's key may not do this."""

    status = 403
    openai_type = "permission_error"
    anthropic_type = "permission_error"
    should_retry = False


class NotFound(GatewayError):
    """An unknown model or object (``code`` says which: ``model_not_found``, ...)."""

    status = 404
    openai_type = "invalid_request_error"
    anthropic_type = "not_found_error"
    code = "not_found"
    should_retry = False


class RouteNotFound(NotFound):
    """No route has this path: the client's base URL or path is wrong, not its model."""

    code = "route_not_found"


class Conflict(GatewayError):
    """The request conflicts with an earlier one (an idempotency key reused)."""

    status = 409
    openai_type = "conflict_error"
    anthropic_type = "invalid_request_error"
    code = "conflict"
    should_retry = False


class MisdirectedRequest(GatewayError):
    """The request names a host (``Host``) that is not one of this gateway's names."""

    status = 421
    openai_type = "invalid_request_error"
    anthropic_type = "invalid_request_error"
    code = "host_not_allowed"
    should_retry = False


class RequestTooLarge(GatewayError):
    """The request body is larger than ``max_body_bytes``."""

    status = 413
    openai_type = "invalid_request_error"
    anthropic_type = "request_too_large"
    code = "request_too_large"
    should_retry = False


class ClientGone(GatewayError):
    """The client disconnected before its answer was ready (nobody reads this)."""

    status = 499
    openai_type = "invalid_request_error"
    anthropic_type = "invalid_request_error"
    code = "client_closed_request"


class RateLimited(GatewayError):
    """A limit of this gateway was reached."""

    status = 429
    openai_type = "rate_limit_error"
    anthropic_type = "rate_limit_error"
    code = "rate_limit_exceeded"
    should_retry = True


class QueueFull(RateLimited):
    """Every turn slot is busy and the waiting queue is full."""

    code = "gateway_busy"


class QuotaExceeded(RateLimited):
    """A limit of the caller's key is reached (``param`` names it).

    Limits that reset within a minute may be retried (``Retry-After``); day and
    month limits may not (``x-should-retry: false``).
    """

    code = "quota_exceeded"

    def __init__(
        self,
        message: str,
        *,
        limit: str,
        retry_after: float | None = None,
        should_retry: bool = False,
    ) -> None:
        super().__init__(message, param=limit, retry_after=retry_after)
        self.should_retry = should_retry


class Unavailable(GatewayError):
    """ccgate cannot take the request now (it is shutting down, say); retry shortly."""

    status = 503
    openai_type = "server_error"
    anthropic_type = "api_error"
    code = "shutting_down"
    should_retry = True


class DatabaseBusy(Unavailable):
    """Another process held the database's write lock longer than ``database_busy_timeout``."""

    code = "database_busy"


class UpstreamError(GatewayError):
    """The model side (Claude Code or its upstream) failed."""

    status = 502
    openai_type = "server_error"
    anthropic_type = "api_error"
    code = "upstream_error"


class UpstreamAuthError(UpstreamError):
    """Claude Code's own credentials were rejected by its upstream."""

    status = 401
    openai_type = "authentication_error"
    anthropic_type = "authentication_error"
    code = "upstream_authentication_failed"
    should_retry = False


class UpstreamBillingError(UpstreamError):
    """The upstream account has no credit or plan for this request."""

    status = 402
    openai_type = "insufficient_quota"
    anthropic_type = "billing_error"
    code = "upstream_billing"
    should_retry = False


class UpstreamRateLimited(UpstreamError):
    """The upstream asked to slow down."""

    status = 429
    openai_type = "rate_limit_error"
    anthropic_type = "rate_limit_error"
    code = "upstream_rate_limited"
    should_retry = True


class UpstreamOverloaded(UpstreamError):
    """The upstream is overloaded (Anthropic's 529)."""

    status = 529
    openai_status = 503
    openai_type = "server_error"
    anthropic_type = "overloaded_error"
    code = "upstream_overloaded"
    should_retry = True


class TurnTimeout(UpstreamError):
    """The turn took longer than ``request_timeout``."""

    status = 504
    openai_type = "timeout"
    anthropic_type = "api_error"
    code = "turn_timeout"


class CLICrashed(UpstreamError):
    """The Claude Code process exited or could not start."""

    code = "cli_crashed"
