"""One error tree, mapped to the OpenAI error envelope in one place."""

from __future__ import annotations

from typing import Any

import orjson


class ModelportError(Exception):
    """Base of every error modelport raises on purpose."""

    status = 500
    type = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = headers or {}

    def envelope(self) -> dict[str, Any]:
        return error_envelope(self.message, self.type, self.param, self.code)


class ConfigError(ModelportError):
    """The configuration is invalid; raised at start-up, never per request."""

    type = "config_error"


class InvalidRequestError(ModelportError):
    status = 400
    type = "invalid_request_error"


class ContextLengthError(InvalidRequestError):
    code = "context_length_exceeded"


class AuthenticationError(ModelportError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDeniedError(ModelportError):
    """The key is valid but may not do this (a model outside its allow-list, a budget
    that is spent for good)."""

    status = 403
    type = "permission_error"
    code = "permission_denied"


class NotFoundError(ModelportError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFoundError(ModelportError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class PayloadTooLargeError(ModelportError):
    status = 413
    type = "invalid_request_error"
    code = "payload_too_large"


class MethodNotAllowedError(InvalidRequestError):
    status = 405


class RateLimitError(ModelportError):
    status = 429
    type = "rate_limit_error"
    code = "queue_full"


class UpstreamError(ModelportError):
    """The worker or online API failed. `status` is what the client gets (502 unless an
    upstream status means something to the client, such as 429); `upstream_status` is what
    the upstream itself answered, which retries and fallbacks decide on."""

    status = 502
    type = "upstream_error"

    def __init__(self, message: str, *, status: int = 502, type: str | None = None,
                 upstream_status: int | None = None, **kw: Any):
        super().__init__(message, **kw)
        self.status = status
        self.upstream_status = upstream_status if upstream_status is not None else status
        if type:
            self.type = type


class MalformedUpstreamError(UpstreamError):
    """The upstream answered 200, but with something that is not a valid OpenAI answer."""

    code = "malformed_upstream_response"


class UpstreamTimeoutError(UpstreamError):
    def __init__(self, message: str, **kw: Any):
        super().__init__(message, status=504, type="timeout_error", **kw)


class ReplicaStalledError(UpstreamTimeoutError):
    """A replica stopped making progress and was taken out of rotation. Its streams end
    with this; a request still waiting for its answer there moves to another replica (a
    timeout: never retried on the same one), or gets this 503 when none is left."""

    code = "replica_stalled"

    def __init__(self, message: str, **kw: Any):
        super().__init__(message, **kw)
        self.status = 503
        self.type = "service_unavailable"


class ModelNotReadyError(ModelportError):
    status = 503
    type = "service_unavailable"
    code = "model_not_ready"


class ShuttingDownError(ModelportError):
    """The gateway is stopping and this request outlived the drain period."""

    status = 503
    type = "service_unavailable"
    code = "server_shutting_down"


class ClientDisconnectedError(ModelportError):
    """The client went away before its answer was ready (nginx's 499 in the access log);
    nothing is sent, the upstream work is cancelled."""

    status = 499
    type = "client_disconnected"


def unexpected_error(error: BaseException, label: str) -> ModelportError:
    """Any exception met while serving `label`, as a typed error: ours pass through,
    everything else (an adapter or plugin tripping over an answer it did not expect) is
    a malformed upstream answer, 502."""
    if isinstance(error, ModelportError):
        return error
    detail = str(error)[:200]
    return MalformedUpstreamError(
        f"{label}: the upstream's answer could not be handled ({type(error).__name__}"
        + (f": {detail})" if detail else ")"))


def error_envelope(
    message: str, type: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


JSON_HEADERS = {"content-type": "application/json"}


def error_http(error: ModelportError,
               body: dict[str, Any] | None = None) -> tuple[int, dict[str, str], bytes]:
    """The one HTTP form of an error, for the gateway and the workers alike: its status,
    its headers (Retry-After, WWW-Authenticate...) and the JSON body, the OpenAI envelope
    unless `body` is another API's shape of the same error (Anthropic's)."""
    return (error.status, {**JSON_HEADERS, **error.headers},
            orjson.dumps(body if body is not None else error.envelope()))


async def send_error(send: Any, error: ModelportError,
                     body: dict[str, Any] | None = None) -> None:
    """`error_http` as raw ASGI messages, for middleware that answers before any app."""
    status, headers, payload = error_http(error, body)
    await send({"type": "http.response.start", "status": status,
                "headers": [(k.lower().encode("latin-1"), v.encode("latin-1"))
                            for k, v in headers.items()]})
    await send({"type": "http.response.body", "body": payload})


def normalize_upstream_error(status: int, body: bytes) -> UpstreamError | InvalidRequestError:
    """Turn an upstream error body (OpenAI, llama.cpp or plain text) into our error tree."""
    message, kind, param, code = f"upstream answered HTTP {status}", None, None, None
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        detail = data.get("error", data)
        if isinstance(detail, dict):
            message = str(detail.get("message") or detail.get("detail") or message)
            kind = detail.get("type")
            param = detail.get("param")
            raw_code = detail.get("code")
            code = raw_code if isinstance(raw_code, str) else None
        elif isinstance(detail, str):
            message = detail
    elif body:
        message = body[:500].decode("utf-8", "replace").strip() or message
    if kind == "exceed_context_size_error":
        return ContextLengthError(message, param="messages")
    # llama.cpp answers some bad requests (token ids outside the vocabulary) with a 500 whose
    # type says what it is: the client's request, not a failing upstream.
    if status == 400 or status == 422 or (status >= 500 and kind == "invalid_request_error"):
        return InvalidRequestError(message, param=param, code=code)
    return UpstreamError(message, status=status, type=kind if isinstance(kind, str) else None,
                         param=param, code=code)


def as_client_status(error: ModelportError, label: str) -> ModelportError:
    """What the client is told of an upstream's error status.

    A 5xx of the upstream is a 502 (the client's request was fine; the gateway's upstream
    failed) except an overloaded or unavailable upstream's 503, which stays a 503 with its
    Retry-After; the upstream refusing *our* configured key (401/403) is a 502 that says
    so, so that a client never takes it for a problem with its own key."""
    if not isinstance(error, UpstreamError):
        return error
    upstream = error.upstream_status
    if upstream in (401, 403):
        error.status = 502
        error.code = "upstream_auth_failed"
        error.message = (f"{label}: the upstream refused the API key configured for this "
                         f"model (HTTP {upstream}): {error.message}")
    elif upstream >= 500 and error.status >= 500 and error.status != 503:
        error.status = 504 if isinstance(error, UpstreamTimeoutError) else 502
        if not error.message.startswith(label):
            error.message = f"{label}: upstream answered HTTP {upstream}: {error.message}"
    error.args = (error.message,)
    return error


class ProviderFault(UpstreamError):
    """A provider plugin raised or returned something unusable: a 502 naming the plugin.

    Not retried (a broken plugin does not mend itself in a second), but fallbacks and
    cool-down apply. A plugin that wants a retry raises UpstreamError(status=503) itself.
    """

    def __init__(self, message: str, **kw):  # noqa: ANN003
        super().__init__(message, status=502, type="provider_error", **kw)
