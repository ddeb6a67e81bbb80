"""The busiest routes dispatched by one dict lookup instead of Starlette's route matching.

Nearly all traffic is POST to a handful of `/v1` paths. Going through Starlette costs such a
request a regex match per route of the outer router, the `/v1` mount and its own router,
plus two exception-handling layers that each wrap `send`: measurable CPU when the gateway
answers thousands of requests a second on one core. Here an exact method and path is
looked up first; every other request (other paths, other methods, a trailing slash, the
lifespan) goes to the Starlette app unchanged, so its answers (404, 405, redirects) stay
the app's own.

The hot path keeps what the layers it skips did: the same key check (its own `BearerAuth`),
the same exception handlers (a ModelportError or HTTPException becomes its envelope, any
other exception a 500 envelope that is then re-raised for the access log to note), and
`request.app` is the Starlette app the handlers read the gateway state from. Whether an
answer has started is read from the access record, so the access log must wrap this app (as
build_app does): that saves wrapping `send` once more for every message of a stream.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from starlette.requests import Request
from starlette.responses import Response

from modelport.api.access_log import record_of

Endpoint = Callable[[Request], Awaitable[Response]]
Handler = Callable[[Request, Exception], Awaitable[Response]]


class HotRoutes:
    """ASGI app: `routes` (full path -> endpoint, POST only) served directly behind `guard`
    (the key check wrapped around the dispatch), everything else by `app`."""

    def __init__(self, app, routes: Mapping[str, Endpoint], *,  # noqa: ANN001
                 handlers: Mapping[type[Exception], Handler], unexpected: Handler,
                 guard: Callable[[Callable], Callable]) -> None:
        self.app = app
        self._routes = dict(routes)
        self._handlers = dict(handlers)
        self._unexpected = unexpected
        self._guarded = guard(self._dispatch)

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if (scope["type"] == "http" and scope["method"] == "POST"
                and scope["path"] in self._routes):
            scope["app"] = self.app  # what Starlette sets: request.app.state.gateway
            await self._guarded(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _dispatch(self, scope, receive, send) -> None:  # noqa: ANN001
        request = Request(scope, receive, send)
        try:
            response = await self._routes[scope["path"]](request)
            await response(scope, receive, send)
        except Exception as error:
            # The access record saw the response start: nothing else can be sent now.
            if record_of(scope).status:
                raise
            handler = self._handler_for(error)
            await (await (handler or self._unexpected)(request, error))(scope, receive, send)
            if handler is None:
                raise

    def _handler_for(self, error: Exception) -> Handler | None:
        for cls in type(error).__mro__:
            handler = self._handlers.get(cls)
            if handler is not None:
                return handler
        return None
