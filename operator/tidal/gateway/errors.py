"""OpenAI-style error responses: what every refusal of the gateway looks like on the wire.

Owns: `error_response`, the one shape (`{"error": {"message", "type", "param", "code"}}`, as the
OpenAI API and vLLM answer) for every status the gateway produces itself. Must not: decide when
to refuse; callers do.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

__all__ = ["error_response"]


def error_response(
    status: int,
    message: str,
    *,
    type_: str,
    code: str,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """A JSON error with `status`; `type_` is OpenAI's error type, `code` ours (snake_case)."""
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return web.json_response(body, status=status, headers=dict(headers or {}))
