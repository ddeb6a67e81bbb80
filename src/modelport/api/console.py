"""The web console's files at /ui, shipped in the package (src/modelport/console).

The files hold no data and no secret: the page asks for a key and sends it with each call
to the API, which authorizes every call itself (/v1 with any key, /admin with the master
key). The policy header keeps the page to its own origin: no script, style or font from
anywhere else, nothing inline, and no framing by other sites.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse
from starlette.staticfiles import StaticFiles

CONSOLE_PATH = "/ui/"

_HEADERS = [
    (b"content-security-policy",
     b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
     b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    # Files change with the installed version; revalidating is cheap (ETag) and a new
    # version is picked up at once.
    (b"cache-control", b"no-cache"),
]


class ConsoleFiles:
    def __init__(self) -> None:
        self._files = StaticFiles(packages=[("modelport", "console")], html=True)

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001 (ASGI)
        async def with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_HEADERS]
            await send(message)

        await self._files(scope, receive, with_headers)


async def to_console(request: Request) -> RedirectResponse:
    """`GET /`: a person who opens the server's address in a browser lands in the console."""
    return RedirectResponse(CONSOLE_PATH, status_code=307)
