"""The keys page (the admin's): every key with its limits and spending; make, edit, revoke."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.responses import RedirectResponse, Response

from ccgate.access.signins import Viewer
from ccgate.api.routes.admin import change_key as change_key_as_admin
from ccgate.api.routes.admin import make_key
from ccgate.console.view import PREFIX, render
from ccgate.console.web import (
    day_start,
    gateway_of,
    month_start,
    post,
    sentence,
    signed_in,
)
from ccgate.errors import GatewayError
from ccgate.gateway import Gateway
from ccgate.protocol.admin import KeyCreate, KeyUpdate
from ccgate.store.records import KeyRecord, UsageSummary

__all__ = ["router"]

router = APIRouter(include_in_schema=False)


async def _keys_page(
    request: Request,
    viewer: Viewer,
    *,
    created: tuple[KeyRecord, str] | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    gateway = gateway_of(request)
    keys = await gateway.keys.list_keys(include_revoked=False)
    month = await gateway.ledger.summarize(None, since=month_start(), group_by="key")
    today = await gateway.ledger.summarize(None, since=day_start(), group_by="key")
    spent = {key.id: (_find(month, key.id), _find(today, key.id)) for key in keys}
    return render(
        request,
        "keys.html",
        {
            "title": "Keys",
            "viewer": viewer,
            "keys": keys,
            "spent": spent,
            "created": created,
            "error": error,
            "multi": gateway.settings.auth_mode == "multi",
        },
        status_code=status_code,
    )


def _find(rows: list[UsageSummary], group: str) -> UsageSummary | None:
    return next((row for row in rows if row.group == group), None)


def _invalid(exc: ValidationError) -> str:
    """Say what is wrong with a form, field by field."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"] if p != "quota")
        parts.append(f"{where.replace('_', ' ')}: {err['msg']}" if where else err["msg"])
    return "; ".join(dict.fromkeys(parts)) + "."


def _admin_only(request: Request, viewer: Viewer) -> Response | None:
    if viewer.is_admin:
        return None
    return render(
        request,
        "error.html",
        {
            "viewer": viewer,
            "title": "Not yours",
            "message": "Keys are the administrator's: sign in with the admin key to manage them.",
        },
        status_code=403,
    )


@router.get(f"{PREFIX}/keys")
async def keys(request: Request) -> Response:
    """Every key with its limits and what it spent this month (admin)."""

    async def page(request: Request, viewer: Viewer) -> Response:
        return _admin_only(request, viewer) or await _keys_page(request, viewer)

    return await signed_in(request, page)


def _changes(form: dict[str, str]) -> dict[str, Any]:
    """Turn the key form's fields into the admin API's body."""
    body: dict[str, Any] = {}
    if "name" in form:
        body["name"] = form["name"]
    quota: dict[str, Any] = {}
    for field in (
        "requests_per_minute",
        "requests_per_day",
        "tokens_per_day",
        "budget_usd_per_month",
        "max_concurrent",
    ):
        if field in form:
            raw = form[field].strip()
            quota[field] = None if raw == "" else _number_of(raw, field)
    if quota:
        body["quota"] = quota
    if "models" in form:
        names = [m.strip() for m in form["models"].replace("\n", ",").split(",") if m.strip()]
        body["models"] = names or None
    if "expires_at" in form:
        raw = form["expires_at"].strip()
        body["expires_at"] = raw or None
    if "disabled" in form:
        body["disabled"] = form["disabled"] == "true"
    return body


def _number_of(raw: str, field: str) -> float | int | str:
    try:
        return float(raw) if field == "budget_usd_per_month" else int(raw)
    except ValueError:
        return raw  # the admin API's check names the field


#: What a keys form does, as the admin; ``None`` goes back to the list.
KeyAction = Callable[[Gateway, Viewer, dict[str, str]], Awaitable[Response | None]]


async def _as_admin(request: Request, act: KeyAction) -> Response:
    """Run a keys form for the admin, with a good CSRF token; say on the page what is wrong."""

    async def action(viewer: Viewer, form: dict[str, str]) -> Response:
        refused = _admin_only(request, viewer)
        if refused is not None:
            return refused
        try:
            done = await act(gateway_of(request), viewer, form)
        except ValidationError as exc:
            return await _keys_page(request, viewer, error=_invalid(exc), status_code=400)
        except GatewayError as exc:
            return await _keys_page(request, viewer, error=sentence(exc.message), status_code=400)
        if done is not None:
            return done
        return RedirectResponse(f"{PREFIX}/keys", status_code=303)

    return await post(request, action)


@router.post(f"{PREFIX}/keys")
async def create_key(request: Request) -> Response:
    """Make a key; the page shows it this once."""

    async def make(gateway: Gateway, viewer: Viewer, form: dict[str, str]) -> Response:
        made = await make_key(gateway, KeyCreate.model_validate(_changes(form)))
        return await _keys_page(request, viewer, created=(made.record, made.key))

    return await _as_admin(request, make)


@router.post(PREFIX + "/keys/{key_id}")
async def change_key(request: Request, key_id: str) -> Response:
    """Change a key's name, limits, models, expiry or whether it is disabled."""

    async def change(gateway: Gateway, viewer: Viewer, form: dict[str, str]) -> None:
        await change_key_as_admin(gateway, key_id, KeyUpdate.model_validate(_changes(form)))

    return await _as_admin(request, change)


@router.post(PREFIX + "/keys/{key_id}/revoke")
async def revoke_key(request: Request, key_id: str) -> Response:
    """Revoke a key for good; its console sign-ins end too."""

    async def revoke(gateway: Gateway, viewer: Viewer, form: dict[str, str]) -> None:
        await gateway.keys.revoke(key_id)
        await gateway.signins.end_key(key_id)

    return await _as_admin(request, revoke)
