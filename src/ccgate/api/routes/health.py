"""Health and metrics: ``/health`` (no CLI), ``/health/auth`` (a real probe), ``/metrics``."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from ccgate import __version__
from ccgate.api.auth import Client, MetricsReader
from ccgate.api.openapi import METRICS_200
from ccgate.api.routing import GatewayRoute
from ccgate.api.state import State

__all__ = ["public_upstream", "router"]

router = APIRouter(tags=["Operations"], route_class=GatewayRoute)


def public_upstream(url: str | None) -> str:
    """Return the upstream for display: never with credentials or a query in it."""
    if not url:
        return "anthropic (Claude Code's default)"
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _same_body(when: str) -> dict[str, Any]:
    return {
        "description": f"The same body as the 200, when {when}.",
        "content": {"application/json": {"schema": {"type": "object"}}},
    }


@router.get(
    "/health",
    responses={503: _same_body("ccgate is shutting down (status: draining)")},
)
async def health(state: State) -> JSONResponse:
    """Say whether the gateway is up, without starting a CLI or saying anything secret."""
    probe = state.probe
    status = "draining" if state.draining else "ok"
    plan = state.plan_summary()
    no_account = state.router is not None and plan["available"] == 0
    replica = None
    if state.replicas is not None and state.shared is not None:
        redis = "ok" if await state.shared.ping() else "unreachable"
        replica = {"id": state.replicas.id, "redis": redis}
    lost = replica is not None and replica["redis"] != "ok"
    if (probe.status() == "unhealthy" or no_account or lost) and not state.draining:
        status = "degraded"
    body = {
        "status": status,
        "version": __version__,
        "upstream": public_upstream(state.upstream),
        "auth_mode": state.settings.auth_mode,
        "uptime_s": round(time.time() - state.started_at, 1),
        "turns": {
            "active": state.gate.active,
            "queued": state.gate.queued,
            "waiting_for_tools": state.turns.parked,
            "max_concurrent": state.settings.max_concurrent,
            "max_queue": state.settings.max_queue,
        },
        "cli_processes": state.runner.live_processes() + state.loops.live_processes(),
        "loops_active": state.loops.live_processes(),
        "pool": state.runner.pool_status(),
        "requests": state.counters.requests,
        "upstream_auth": probe.status(),
        "accounts": plan,
    }
    if replica is not None:
        body["replica"] = replica
    return JSONResponse(body, status_code=503 if state.draining else 200)


@router.get(
    "/health/auth",
    responses={503: _same_body("two probes in a row failed (unhealthy)")},
)
async def health_auth(state: State, client: Client) -> JSONResponse:
    """Probe the upstream for real (cached); 503 only after two failed probes in a row."""
    probe = state.probe
    await probe.check(state.runner, state.catalogue.resolve(state.settings.default_model))
    body = probe.as_dict()
    return JSONResponse(body, status_code=503 if probe.status() == "unhealthy" else 200)


@router.get("/metrics", response_class=PlainTextResponse, responses=METRICS_200)
async def metrics(state: State, reader: MetricsReader) -> Response:
    """Expose counters, histograms and gauges in Prometheus' text format.

    Readers: the admin key or ``metrics_token``; with ``auth_mode=shared`` also
    the shared key; with ``auth_mode=none`` anyone (on loopback).
    """
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
