"""The accounts page (the operator's): every upstream account with its plan, who used it in
its 5-hour window, and the buttons to disable or enable it and to end its cooldown."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from ccgate.access.signins import Viewer
from ccgate.console.plan import plan_card, sees_accounts
from ccgate.console.view import PREFIX, render
from ccgate.console.web import gateway_of, post, sentence, signed_in
from ccgate.errors import GatewayError, InvalidRequest, NotFound
from ccgate.gateway import Gateway

__all__ = ["router"]

router = APIRouter(include_in_schema=False)


async def _accounts_page(
    request: Request, viewer: Viewer, *, error: str | None = None, status_code: int = 200
) -> Response:
    gateway = gateway_of(request)
    rows = await plan_card(gateway, viewer, "full")
    return render(
        request,
        "accounts.html",
        {
            "title": "Accounts",
            "viewer": viewer,
            "rows": rows,
            "routed": gateway.router.routed if gateway.router is not None else None,
            "routing": gateway.settings.account_routing,
            "allow_extra_usage": gateway.settings.allow_extra_usage,
            "error": error,
        },
        status_code=status_code,
    )


def _operator_only(request: Request, viewer: Viewer) -> Response | None:
    if sees_accounts(viewer):
        return None
    return render(
        request,
        "error.html",
        {
            "viewer": viewer,
            "title": "Not yours",
            "message": "The upstream accounts are the administrator's: sign in with the "
            "admin key to see and manage them.",
        },
        status_code=403,
    )


@router.get(f"{PREFIX}/accounts")
async def accounts(request: Request) -> Response:
    """Every upstream account with its plan and who used it (the admin's, or local)."""

    async def page(request: Request, viewer: Viewer) -> Response:
        return _operator_only(request, viewer) or await _accounts_page(request, viewer)

    return await signed_in(request, page)


#: What an accounts form does to the account ``account_id``.
AccountAction = Callable[[Gateway, str, dict[str, str]], Awaitable[None]]


async def _as_operator(request: Request, account_id: str, act: AccountAction) -> Response:
    """Run an accounts form for the operator, with a good CSRF token; say what is wrong."""

    async def action(viewer: Viewer, form: dict[str, str]) -> Response:
        refused = _operator_only(request, viewer)
        if refused is not None:
            return refused
        gateway = gateway_of(request)
        try:
            gateway.accounts.find(account_id)
            await act(gateway, account_id, form)
        except NotFound:
            return await _accounts_page(
                request, viewer, error="There is no such account (any more).", status_code=404
            )
        except GatewayError as exc:
            return await _accounts_page(
                request, viewer, error=sentence(exc.message), status_code=400
            )
        return RedirectResponse(f"{PREFIX}/accounts", status_code=303)

    return await post(request, action)


@router.post(PREFIX + "/accounts/{account_id}/enabled")
async def enable_account(request: Request, account_id: str) -> Response:
    """Enable (``enabled=true``) or disable (``enabled=false``) an account."""

    async def change(gateway: Gateway, account_id: str, form: dict[str, str]) -> None:
        wanted = form.get("enabled")
        if wanted not in ("true", "false"):
            raise InvalidRequest("enabled: true or false", param="enabled")
        await gateway.accounts.update(account_id, enabled=wanted == "true")

    return await _as_operator(request, account_id, change)


@router.post(PREFIX + "/accounts/{account_id}/reset")
async def reset_account(request: Request, account_id: str) -> Response:
    """End an account's cooldown now (a person knows it can serve again)."""

    async def reset(gateway: Gateway, account_id: str, form: dict[str, str]) -> None:
        await gateway.accounts.reset(account_id)

    return await _as_operator(request, account_id, reset)
