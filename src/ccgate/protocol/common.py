"""Translation helpers shared by the wire protocols (pure, no I/O)."""

from __future__ import annotations

import base64
import binascii
import re
import secrets

from ccgate.engine.turn import ImagePart, Message, Part, TextPart
from ccgate.errors import InvalidRequest

__all__ = [
    "IMAGE_TYPES",
    "check_system",
    "data_url_image",
    "merge_roles",
    "new_id",
    "url_image",
]

IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")

_DATA_URL = re.compile(r"^data:(?P<type>[\w.+-]+/[\w.+-]+);base64,(?P<data>.*)$", re.DOTALL)


def new_id(prefix: str) -> str:
    """Return a fresh random id with ``prefix``."""
    return prefix + secrets.token_hex(12)


def check_image_base64(media_type: str, data: str, param: str) -> ImagePart:
    """Validate an inline image and return it as a part."""
    if media_type not in IMAGE_TYPES:
        raise InvalidRequest(
            f"{param}: unsupported image type '{media_type}'; use one of {', '.join(IMAGE_TYPES)}",
            param=param,
        )
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"{param}: the image data is not valid base64", param=param) from None
    return ImagePart(media_type=media_type, data=data)


def data_url_image(url: str, param: str) -> ImagePart:
    """Return the image of a ``data:`` URL, or raise InvalidRequest naming the problem."""
    match = _DATA_URL.match(url)
    if match is None:
        raise InvalidRequest(
            f"{param}: a data URL must look like data:image/png;base64,<data>", param=param
        )
    return check_image_base64(match["type"], match["data"].strip(), param)


def url_image(url: str, param: str) -> ImagePart:
    """Return an image by URL (``data:`` or ``https:``), refusing every other scheme."""
    if url.startswith("data:"):
        return data_url_image(url, param)
    if url.startswith("https://"):
        return ImagePart(url=url)
    raise InvalidRequest(
        f"{param}: image URLs must be https: or data: URLs, got '{url[:40]}'", param=param
    )


def check_system(text: str | None, param: str) -> str | None:
    """Refuse a system prompt the CLI cannot take (it travels as a process argument)."""
    if text is not None and "\x00" in text:
        raise InvalidRequest(f"{param}: the system prompt contains a NUL character", param=param)
    return text


def merge_roles(messages: list[Message]) -> list[Message]:
    """Merge consecutive messages of the same role, as the Messages API requires.

    Texts that meet are separated by a blank line; tool calls and results are kept
    as they are.
    """
    merged: list[Message] = []
    for message in messages:
        if merged and merged[-1].role == message.role:
            previous = merged[-1]
            meet = previous.parts[-1:] + message.parts[:1]
            texts = len(meet) == 2 and all(isinstance(p, TextPart | ImagePart) for p in meet)
            glue: tuple[Part, ...] = (TextPart("\n\n"),) if texts else ()
            merged[-1] = Message(message.role, previous.parts + glue + message.parts)
        else:
            merged.append(message)
    return merged
