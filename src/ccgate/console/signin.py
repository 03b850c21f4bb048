"""The console's sign-in and sign-out (the key typed into a form; see ccgate.access.signins)."""

from __future__ import annotations

import math

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from ccgate.access.signins import Viewer
from ccgate.console.view import PREFIX, render
from ccgate.console.web import (
    COOKIE,
    client_address,
    gateway_of,
    post,
    read_form,
    sentence,
    set_cookie,
    to_signin,
    viewer_of,
)
from ccgate.errors import AuthenticationFailed

__all__ = ["router"]

router = APIRouter(include_in_schema=False)


@router.get(f"{PREFIX}/signin")
async def signin_form(request: Request) -> Response:
    """The sign-in form (with no auth, straight to the overview)."""
    signins = gateway_of(request).signins
    if signins.open or await viewer_of(request) is not None:
        return RedirectResponse("/", status_code=303)
    return render(request, "signin.html", {"title": "Sign in", "error": None})


@router.post(f"{PREFIX}/signin")
async def signin(request: Request) -> Response:
    """Check the key typed in; on success set the cookie and go to the overview."""
    signins = gateway_of(request).signins
    address = client_address(request)
    wait = signins.brake.wait(address)
    if wait > 0:
        response = render(
            request,
            "signin.html",
            {
                "title": "Sign in",
                "error": f"Too many failed sign-ins from this address: wait {math.ceil(wait)} s "
                "and try again.",
            },
            status_code=429,
        )
        response.headers["retry-after"] = str(math.ceil(wait))
        return response
    form = await read_form(request)
    try:
        token, _ = await signins.sign_in(form.get("key", ""))
    except AuthenticationFailed as exc:
        signins.brake.failed(address)
        context = {"title": "Sign in", "error": sentence(exc.message)}
        return render(request, "signin.html", context, status_code=401)
    done = RedirectResponse("/", status_code=303)
    set_cookie(request, done, token)
    return done


@router.post(f"{PREFIX}/signout")
async def signout(request: Request) -> Response:
    """End the sign-in and forget the cookie."""

    async def action(viewer: Viewer, form: dict[str, str]) -> Response:
        await gateway_of(request).signins.sign_out(request.cookies.get(COOKIE))
        response = to_signin()
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return response

    return await post(request, action)
