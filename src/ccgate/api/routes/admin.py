"""The admin API (``/admin/*``, authorised by ``admin_key``): keys, upstream accounts, usage."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse

from ccgate.access.keys import NewKey
from ccgate.api.auth import Admin
from ccgate.api.openapi import errors
from ccgate.api.routing import GatewayRoute
from ccgate.api.state import State
from ccgate.gateway import Gateway
from ccgate.protocol.admin import (
    TIME_SCHEMA,
    AccountCreate,
    AccountUpdate,
    KeyCreate,
    KeyUpdate,
    account_object,
    accounts_list,
    key_object,
    parse_expiry,
    parse_time,
    usage_object,
)
from ccgate.store.keys import KeyRecord, Quota

__all__ = ["account_listing", "change_account", "change_key", "make_key", "router"]

router = APIRouter(prefix="/admin", tags=["Admin"], route_class=GatewayRoute)


def _models(state: Gateway, names: list[str] | None) -> tuple[str, ...] | None:
    """Return the ids of the models a key may use (unknown names are a 404 naming them)."""
    if names is None:
        return None
    return tuple(dict.fromkeys(state.catalogue.resolve(name).id for name in names))


async def make_key(state: Gateway, body: KeyCreate) -> NewKey:
    """Make a client key as ``body`` says (the admin API and the console alike)."""
    return await state.keys.create(
        body.name,
        quota=body.quota.to_quota() if body.quota else None,
        models=_models(state, body.models),
        expires_at=parse_expiry(body.expires_at, "expires_at", now=time.time()),
    )


async def change_key(state: Gateway, key_id: str, body: KeyUpdate) -> KeyRecord:
    """Change what ``body`` gives of a key (the admin API and the console alike)."""
    given = body.model_fields_set
    changes: dict[str, Any] = {}
    if "name" in given and body.name is not None:
        changes["name"] = body.name
    if "quota" in given:
        changes["quota"] = body.quota.to_quota() if body.quota else Quota()
    if "models" in given:
        changes["models"] = _models(state, body.models)
    if "disabled" in given and body.disabled is not None:
        changes["disabled"] = body.disabled
    if "expires_at" in given:
        changes["expires_at"] = parse_expiry(body.expires_at, "expires_at", now=time.time())
    return await state.keys.update(key_id, **changes)


@router.post("/keys", status_code=201, responses=errors("openai", 404))
async def create_key(body: KeyCreate, state: State, admin: Admin) -> JSONResponse:
    """Make a client key; the response is the only place the key ever appears."""
    made = await make_key(state, body)
    return JSONResponse(key_object(made.record, made.key), status_code=201)


@router.get("/keys")
async def list_keys(state: State, admin: Admin, include_revoked: bool = False) -> dict[str, Any]:
    """List the keys (never the keys themselves), oldest first."""
    records = await state.keys.list_keys(include_revoked=include_revoked)
    return {"object": "list", "data": [key_object(r) for r in records]}


@router.get("/keys/{key_id}", responses=errors("openai", 404))
async def get_key(key_id: str, state: State, admin: Admin) -> dict[str, Any]:
    """Describe one key."""
    return key_object(await state.keys.get(key_id))


@router.patch("/keys/{key_id}", responses=errors("openai", 404))
async def update_key(key_id: str, body: KeyUpdate, state: State, admin: Admin) -> dict[str, Any]:
    """Change a key's name, quota, models, disabled flag or expiry."""
    return key_object(await change_key(state, key_id, body))


@router.delete("/keys/{key_id}", responses=errors("openai", 404))
async def revoke_key(key_id: str, state: State, admin: Admin) -> dict[str, Any]:
    """Revoke a key: it stops working at once."""
    return key_object(await state.keys.revoke(key_id))


#: An account's id or name in a path (names are at most 64 characters).
AccountRef = Annotated[str, Path(min_length=1, max_length=200)]


def account_listing(state: Gateway) -> dict[str, Any]:
    """Return every account and the summary (the admin API and the console alike)."""
    routed = None
    if state.router is not None:
        counted = state.router.routed
        routed = {
            "turns": dict(counted.turns),
            "moved": counted.moved,
            "failovers": counted.failovers,
            "refused": counted.refused,
        }
    return accounts_list(
        state.accounts,
        order=state.settings.account_routing,
        allow_extra_usage=state.settings.allow_extra_usage,
        routed=routed,
    )


async def change_account(state: Gateway, id_or_name: str, body: AccountUpdate) -> dict[str, Any]:
    """Change what ``body`` gives of an account; return its object (API and console alike)."""
    given = body.model_fields_set
    changes = {name: getattr(body, name) for name in given}
    record = await state.accounts.update(id_or_name, **changes)
    return account_object(state.accounts.view(record))


@router.get("/accounts")
async def list_accounts(state: State, admin: Admin) -> dict[str, Any]:
    """List the upstream accounts (lowest priority number first) and a summary; no secrets."""
    return account_listing(state)


@router.post("/accounts", status_code=201, responses=errors("openai", 409))
async def create_account(body: AccountCreate, state: State, admin: Admin) -> JSONResponse:
    """Add an upstream account; its secret is stored encrypted and never shown again."""
    made = await state.accounts.add(
        body.name,
        body.kind,
        secret=body.secret,
        base_url=body.base_url,
        priority=body.priority,
        enabled=body.enabled,
    )
    return JSONResponse(account_object(state.accounts.view(made)), status_code=201)


@router.get("/accounts/{id_or_name}", responses=errors("openai", 404))
async def get_account(id_or_name: AccountRef, state: State, admin: Admin) -> dict[str, Any]:
    """Describe one account: its plan windows, extra usage, cooldown and last reading."""
    return account_object(state.accounts.view(state.accounts.find(id_or_name)))


@router.patch("/accounts/{id_or_name}", responses=errors("openai", 404, 409))
async def update_account(
    id_or_name: AccountRef, body: AccountUpdate, state: State, admin: Admin
) -> dict[str, Any]:
    """Change an account's name, priority, enabled flag, base URL or secret."""
    return await change_account(state, id_or_name, body)


@router.delete("/accounts/{id_or_name}", responses=errors("openai", 404))
async def remove_account(id_or_name: AccountRef, state: State, admin: Admin) -> dict[str, Any]:
    """Remove an account (not ``default``, ccgate's own credential setting: disable that)."""
    record = await state.accounts.remove(id_or_name)
    return account_object(state.accounts.view(record))


@router.post("/accounts/{id_or_name}/reset", responses=errors("openai", 404))
async def reset_account(id_or_name: AccountRef, state: State, admin: Admin) -> dict[str, Any]:
    """End an account's cooldown now: it takes requests again."""
    record = await state.accounts.reset(id_or_name)
    return account_object(state.accounts.view(record))


@router.post("/accounts/{id_or_name}/probe", responses=errors("openai", 404, 409, 503))
async def probe_account(id_or_name: AccountRef, state: State, admin: Admin) -> dict[str, Any]:
    """Read an account's plan now with the smallest request there is (at most 16 output
    tokens, outside any conversation); answer the account with the reading and ``probe``."""
    return account_object(await state.probe_account(id_or_name))


@router.get("/usage")
async def usage(
    state: State,
    admin: Admin,
    key_id: str | None = None,
    since: Annotated[str | None, Query(json_schema_extra=TIME_SCHEMA)] = None,
    until: Annotated[str | None, Query(json_schema_extra=TIME_SCHEMA)] = None,
    group_by: Literal["day", "model", "key"] = "day",
) -> dict[str, Any]:
    """Summarise the usage ledger, of one key or of all."""
    start, end = parse_time(since, "since"), parse_time(until, "until")
    rows = await state.ledger.summarize(key_id, since=start, until=end, group_by=group_by)
    body = usage_object(rows, group_by, start, end)
    if group_by == "key":
        names = {k.id: k.name for k in await state.keys.list_keys(include_revoked=True)}
        for row in body["data"]:
            row["name"] = names.get(row["group"])  # None for "local" and "shared"
    return body
