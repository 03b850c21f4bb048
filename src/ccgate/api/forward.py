"""Forward a request to the replica that runs its turn or loop, and stream its answer back.

With several replicas (``redis_url``), a request may arrive at a replica
that does not hold what it needs: the turn waiting for the client's tool
results, the warm process of a conversation the client names with
``X-Session-Id``, the loop whose choice it answers. The route then asks
where that runs (``cluster.replicas``) and, when it is another live
replica, hands the request over: same method, path, query, headers and
body, with ``X-Ccgate-Forwarded-By`` added. The answer (JSON or a stream
of events) is passed back as it comes, and a client that leaves closes the
forwarded request too, so the turn there is cancelled as if the client had
left it directly.

A forwarded request is never forwarded again: the replica that gets it
serves it (it checks the caller's key again, as for any request). When the
replica named cannot be reached it is dead or leaving, and :func:`forward`
returns ``None``: the caller serves the request itself (a conversation
resumes from the shared transcript, a loop's lease is taken over).
"""

from __future__ import annotations

import logging

import httpx
from fastapi import Request
from fastapi.responses import Response

from ccgate.api.watched import WatchedResponse
from ccgate.cluster.replicas import Peer
from ccgate.engine.turn import TurnRequest
from ccgate.errors import SharedStateUnavailable
from ccgate.gateway import Gateway

__all__ = ["FORWARDED_BY", "elsewhere", "forward", "forwarded", "to_loop_home"]

log = logging.getLogger("ccgate.api")

FORWARDED_BY = "x-ccgate-forwarded-by"

#: Headers that describe one hop, not the request (RFC 9110 §7.6.1), and those httpx sets.
_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        FORWARDED_BY,
    }
)


def forwarded(request: Request) -> bool:
    """Tell whether another replica forwarded ``request`` here (it is served here then)."""
    return FORWARDED_BY in request.headers


async def forward(state: Gateway, request: Request, peer: Peer) -> Response | None:
    """Send ``request`` to ``peer`` and return its answer; ``None`` when it cannot be reached."""
    replicas, client = state.replicas, state.peers
    assert replicas is not None and client is not None
    body = await request.body()
    headers = [(k, v) for k, v in request.headers.raw if k.decode().lower() not in _HOP]
    headers.append((FORWARDED_BY.encode(), replicas.id.encode()))
    url = peer.url + request.url.path + (f"?{request.url.query}" if request.url.query else "")
    outgoing = client.build_request(request.method, url, headers=headers, content=body)
    try:
        answer = await client.send(outgoing, stream=True)
    except httpx.TransportError as exc:
        log.warning(
            "forward_failed to=%s path=%s error=%s", peer.id, request.url.path, type(exc).__name__
        )
        return None
    log.info(
        "request_forwarded to=%s path=%s status=%d", peer.id, request.url.path, answer.status_code
    )
    kept = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP}
    kept[FORWARDED_BY] = peer.id
    return WatchedResponse(
        answer.aiter_raw(), kept, on_close=answer.aclose, status_code=answer.status_code
    )


async def elsewhere(
    state: Gateway, request: Request, namespace: str, turn: TurnRequest, session: str | None
) -> Peer | None:
    """Return the other replica a compatible-API request belongs on, if any.

    A request carrying tool results belongs where the turn waiting for them
    runs; one naming its session (``X-Session-Id``) where its conversation's
    process is warm. Redis out of reach: here (the turn is rebuilt or resumed).
    """
    replicas = state.replicas
    if replicas is None or forwarded(request):
        return None
    results = turn.last.tool_results
    try:
        if results:
            return await replicas.find("call", f"{namespace}:{results[0].tool_use_id}")
        if session is not None:
            return await replicas.find("session", f"{namespace}:{session}")
    except SharedStateUnavailable:
        return None
    return None


async def to_loop_home(state: Gateway, request: Request, loop_id: str) -> Response | None:
    """Forward a request for a loop another replica runs (``None``: it runs here).

    The loop's lease is taken here when no live replica holds it, or when the
    one that did cannot be reached (it died: this replica takes the loop over).
    """
    peer = await state.loop_home(loop_id, forwarded=forwarded(request))
    if peer is None:
        return None
    handed = await forward(state, request, peer)
    if handed is None:
        await state.take_loop(loop_id)
    return handed
