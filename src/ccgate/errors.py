"""The one exception tree of ccgate.

:class:`CcgateError` is its root. Refused settings (:class:`ConfigError`) stop a
start; every error a client can see is a :class:`GatewayError`, which knows its
HTTP status and its type on each wire protocol (OpenAI, Anthropic, the Loop
API), and each protocol's renderer turns it into that protocol's shape. A
failed turn names its failure with a *kind* (``TurnError.kind``): the class that
stands for each kind says so in its ``kind``, and :func:`for_turn` is the one
place a kind becomes an error::

    CcgateError
    ├── ConfigError                        refused settings (start-up only)
    ├── LoginRefreshFailed                 a login's OAuth refresh failed (logged, never sent)
    └── GatewayError                  500  server error
        ├── InvalidRequest            400  malformed or meaningless input  [invalid_request]
        │   ├── MethodNotAllowed      405  the route exists, not with this method
        │   └── OtherClientError      4xx  another refusal of the HTTP layer
        ├── AuthenticationFailed      401  missing or wrong client key
        ├── PermissionDenied          403  key not allowed to do this
        ├── NotFound                  404  unknown object
        │   ├── ModelNotFound         404  unknown model  [model_not_found]
        │   └── RouteNotFound         404  no such route (a base URL or path mistake)
        ├── Conflict                  409  the request conflicts with an earlier one
        ├── MisdirectedRequest        421  a Host this gateway does not answer to
        ├── RequestTooLarge           413  body over ``max_body_bytes``
        ├── ClientGone                499  the client left before the answer
        ├── RateLimited               429  a limit of this gateway
        │   ├── QueueFull             429  every slot busy and the queue full
        │   ├── QuotaExceeded         429  a limit of the caller's key
        │   └── PlanLimited           429  no upstream account's plan can take it  [plan_limit]
        ├── Unavailable               503  ccgate cannot take the request now  [unavailable]
        │   └── DatabaseBusy          503  the database stayed locked by another process
        └── UpstreamError             502  the model side failed  [upstream]
            ├── UpstreamAuthError     401  Claude Code's credentials rejected  [authentication]
            ├── UpstreamBillingError  402  the upstream account cannot pay  [billing]
            ├── UpstreamRateLimited   429  the upstream said slow down  [rate_limit]
            ├── UpstreamOverloaded    529  the upstream is overloaded  [overloaded]
            ├── StructuredOutputFailed 502  no answer matched the schema  [structured_output]
            ├── TurnTimeout           504  the turn outlived ``request_timeout``  [timeout]
            └── CLICrashed            502  the Claude Code process died  [cli_crashed]
"""

from __future__ import annotations

from ccgate.redact import hide_addresses

#: The longest ``Retry-After`` an answer gives (seconds). A limit that lasts longer says
#: when it ends in its message and tells clients not to retry on their own
#: (``x-should-retry: false``): SDKs that honour ``Retry-After`` would otherwise sleep
#: for hours inside one call.
RETRY_AFTER_MAX = 300

__all__ = [
    "AuthenticationFailed",
    "CLICrashed",
    "CcgateError",
    "ClientGone",
    "ConfigError",
    "Conflict",
    "DatabaseBusy",
    "GatewayError",
    "InvalidRequest",
    "LoginRefreshFailed",
    "MethodNotAllowed",
    "MisdirectedRequest",
    "ModelNotFound",
    "NotFound",
    "OtherClientError",
    "PermissionDenied",
    "PlanLimited",
    "QueueFull",
    "QuotaExceeded",
    "RETRY_AFTER_MAX",
    "RateLimited",
    "RequestTooLarge",
    "RouteNotFound",
    "SharedStateUnavailable",
    "StructuredOutputFailed",
    "TurnTimeout",
    "Unavailable",
    "UpstreamAuthError",
    "UpstreamBillingError",
    "UpstreamError",
    "UpstreamOverloaded",
    "UpstreamRateLimited",
    "for_turn",
]


class CcgateError(Exception):
    """The root of every error ccgate raises on purpose."""


class ConfigError(CcgateError):
    """Settings that ccgate refuses to start with (the message says how to fix them)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class LoginRefreshFailed(CcgateError):
    """The OAuth token endpoint did not renew a Claude Code login (``accounts.login``).

    ``refused`` is true when the endpoint answered that the refresh token is no longer
    valid (a new ``claude /login`` is needed), false for a failure worth retrying.
    """

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.refused = refused


class GatewayError(CcgateError):
    """Base of every error a client is told; carries what each protocol needs to render it."""

    status: int = 500
    #: The status on the OpenAI-compatible API, where it differs (529 is Anthropic's own).
    openai_status: int | None = None
    openai_type: str = "server_error"
    anthropic_type: str = "api_error"
    #: The Loop API's type, and its code when the error names none.
    loop_type: str = "api_error"
    loop_code: str = "server_error"
    code: str | None = None
    #: Whether a client should retry the same request later (``x-should-retry``).
    should_retry: bool | None = None
    #: Which limit refused (``x-ccgate-limit``): ``key_quota``, ``plan_window``,
    #: ``extra_usage``, ``plan_share``, ``gateway_queue`` or ``upstream``.
    limit: str | None = None
    #: The kind of turn failure this class stands for (``TurnError.kind``), and the
    #: message :func:`for_turn` makes of the failure's detail.
    kind: str | None = None
    template = "{detail}"

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
        should_retry = self.should_retry
        if self.retry_after is not None:
            headers["retry-after"] = str(max(1, min(RETRY_AFTER_MAX, round(self.retry_after))))
            if self.retry_after > RETRY_AFTER_MAX:
                should_retry = False
        if should_retry is not None:
            headers["x-should-retry"] = "true" if should_retry else "false"
        if self.limit is not None:
            headers["x-ccgate-limit"] = self.limit
        return headers


class InvalidRequest(GatewayError):
    """The request is malformed, or asks for something ccgate cannot honour."""

    status = 400
    openai_type = "invalid_request_error"
    anthropic_type = "invalid_request_error"
    loop_type = "invalid_request_error"
    loop_code = "invalid_request"
    should_retry = False
    kind = "invalid_request"
    template = "The upstream refused the request: {detail}"


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


class OtherClientError(InvalidRequest):
    """A refusal of the HTTP layer with another 4xx status (given when it is raised)."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class AuthenticationFailed(GatewayError):
    """The client's key is missing or wrong."""

    status = 401
    openai_type = "authentication_error"
    anthropic_type = "authentication_error"
    code = "invalid_api_key"
    loop_type = "authentication_error"
    loop_code = "invalid_api_key"
    should_retry = False


class PermissionDenied(GatewayError):
    """The client's key may not do this."""

    status = 403
    openai_type = "permission_error"
    anthropic_type = "permission_error"
    loop_type = "permission_error"
    loop_code = "forbidden"
    should_retry = False


class NotFound(GatewayError):
    """An unknown object (``code`` says which)."""

    status = 404
    openai_type = "invalid_request_error"
    anthropic_type = "not_found_error"
    loop_type = "not_found_error"
    loop_code = "not_found"
    code = "not_found"
    should_retry = False


class ModelNotFound(NotFound):
    """The model a request names does not exist, or its upstream does not offer it."""

    code = "model_not_found"
    kind = "model_not_found"
    template = (
        "The upstream does not offer this model ({detail}). GET /v1/models lists the "
        "models Claude Code offers."
    )

    def __init__(self, message: str) -> None:
        super().__init__(message, param="model")


class RouteNotFound(NotFound):
    """No route has this path: the client's base URL or path is wrong, not its model."""

    code = "route_not_found"


class Conflict(GatewayError):
    """The request conflicts with an earlier one (an idempotency key reused)."""

    status = 409
    openai_type = "conflict_error"
    anthropic_type = "invalid_request_error"
    loop_type = "conflict_error"
    loop_code = "conflict"
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
    loop_type = "request_too_large"
    loop_code = "request_too_large"
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
    loop_type = "rate_limit_error"
    loop_code = "rate_limit_exceeded"
    code = "rate_limit_exceeded"
    should_retry = True


class QueueFull(RateLimited):
    """Every turn slot is busy and the waiting queue is full."""

    code = "gateway_busy"
    limit = "gateway_queue"


class QuotaExceeded(RateLimited):
    """A limit of the caller's key is reached (``param`` names it).

    Limits that reset within a minute may be retried (``Retry-After``); day and
    month limits may not (``x-should-retry: false``).
    """

    code = "quota_exceeded"
    limit = "key_quota"

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


class PlanLimited(RateLimited):
    """No upstream account's plan can take the request now (``param`` names the limit).

    ``plan_window``: every account's window is used up (or cooling down);
    ``extra_usage``: what is left would be billed as extra usage, which the
    operator did not allow; ``plan_share``: the caller's key used its share of a
    window that is running low. ``Retry-After`` is the time the first account
    frees up.
    """

    loop_code = "plan_limit"
    code = "plan_limit"
    kind = "plan_limit"
    template = "{detail}"

    def __init__(
        self, message: str, *, limit: str = "plan_window", retry_after: float | None = None
    ) -> None:
        super().__init__(f"Plan limit ({limit}): {message}", param=limit, retry_after=retry_after)
        self.limit = limit


class Unavailable(GatewayError):
    """ccgate cannot take the request now (it is shutting down, say); retry shortly."""

    status = 503
    openai_type = "server_error"
    anthropic_type = "api_error"
    loop_type = "unavailable_error"
    loop_code = "unavailable"
    code = "shutting_down"
    should_retry = True
    kind = "unavailable"
    template = "{detail}; retry shortly"


class DatabaseBusy(Unavailable):
    """Another process held the database's write lock longer than ``database_busy_timeout``."""

    code = "database_busy"


class SharedStateUnavailable(Unavailable):
    """The Redis the replicas share could not be reached (``redis_outage=closed``)."""

    code = "shared_state_unavailable"


class UpstreamError(GatewayError):
    """The model side (Claude Code or its upstream) failed."""

    status = 502
    openai_type = "server_error"
    anthropic_type = "api_error"
    code = "upstream_error"
    kind = "upstream"
    template = "The upstream failed: {detail}"


class UpstreamAuthError(UpstreamError):
    """Claude Code's own credentials were rejected by its upstream."""

    status = 401
    openai_type = "authentication_error"
    anthropic_type = "authentication_error"
    code = "upstream_authentication_failed"
    should_retry = False
    kind = "authentication"
    template = (
        "Claude Code's upstream rejected its credentials ({detail}). Log in once with "
        "`claude /login` as the user running ccgate (or set CLAUDE_CODE_OAUTH_TOKEN from "
        "`claude setup-token`), or set CCGATE_UPSTREAM_API_KEY to an Anthropic API key, then "
        "restart ccgate."
    )


class UpstreamBillingError(UpstreamError):
    """The upstream account has no credit or plan for this request."""

    status = 402
    openai_type = "insufficient_quota"
    anthropic_type = "billing_error"
    code = "upstream_billing"
    should_retry = False
    kind = "billing"
    template = (
        "The upstream account cannot pay for this request ({detail}). Check the plan or "
        "credit balance of the account ccgate uses."
    )


class UpstreamRateLimited(UpstreamError):
    """The upstream asked to slow down."""

    status = 429
    openai_type = "rate_limit_error"
    anthropic_type = "rate_limit_error"
    code = "upstream_rate_limited"
    should_retry = True
    limit = "upstream"
    kind = "rate_limit"
    template = "The upstream rate limit was reached ({detail}); retry later."


class UpstreamOverloaded(UpstreamError):
    """The upstream is overloaded (Anthropic's 529)."""

    status = 529
    openai_status = 503
    openai_type = "server_error"
    anthropic_type = "overloaded_error"
    code = "upstream_overloaded"
    should_retry = True
    kind = "overloaded"
    template = "The upstream is overloaded ({detail}); retry shortly."


class StructuredOutputFailed(UpstreamError):
    """The model gave no answer that matches the requested JSON schema."""

    code = "structured_output_failed"
    should_retry = True
    kind = "structured_output"
    template = (
        "The model did not answer in the requested JSON schema ({detail}); nothing that "
        "fails the schema is returned. Retry, or loosen the schema."
    )


class TurnTimeout(UpstreamError):
    """The turn took longer than ``request_timeout``."""

    status = 504
    openai_type = "timeout"
    anthropic_type = "api_error"
    code = "turn_timeout"
    kind = "timeout"


class CLICrashed(UpstreamError):
    """The Claude Code process exited or could not start."""

    code = "cli_crashed"
    kind = "cli_crashed"
    template = "{detail}"


def _kinds(root: type[GatewayError]) -> dict[str, type[GatewayError]]:
    found: dict[str, type[GatewayError]] = {}
    for cls in root.__subclasses__():
        found.update(_kinds(cls))
        if "kind" in cls.__dict__ and cls.kind is not None:
            found[cls.kind] = cls
    return found


def for_turn(kind: str, detail: str, *, retry_after: float | None = None) -> GatewayError:
    """Return the client-facing error for a failed turn of ``kind`` (``TurnError.kind``).

    The message says what to do; network addresses in ``detail`` are hidden (where
    the upstream lives is no client's business). An unknown kind is an
    :class:`UpstreamError`.
    """
    cls = _BY_KIND.get(kind, UpstreamError)
    message = cls.template.format(detail=hide_addresses(detail))
    if cls is ModelNotFound:
        return ModelNotFound(message)
    if cls is PlanLimited:
        limit, _, text = message.partition(": ") if message.startswith(_LIMITS) else ("", "", "")
        if limit:
            return PlanLimited(text, limit=limit, retry_after=retry_after)
        return PlanLimited(message, retry_after=retry_after)
    return cls(message, retry_after=retry_after if cls is UpstreamRateLimited else None)


#: The limits a ``plan_limit`` turn failure may name first in its detail (``limit: text``).
_LIMITS = ("plan_window: ", "extra_usage: ", "plan_share: ")


#: Each turn failure's kind and the class that stands for it.
_BY_KIND: dict[str, type[GatewayError]] = _kinds(GatewayError)
