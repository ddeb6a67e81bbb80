"""Which error envelope a route speaks: Anthropic's on /v1/messages, OpenAI's elsewhere.

Every error path of the gateway (auth, the app's handlers) asks here, so a client of the
Anthropic API never gets an OpenAI-shaped error, whatever went wrong.
"""

from __future__ import annotations

from typing import Any

from modelport.errors import ModelportError
from modelport.foreign.anthropic_downstream import error_body

ANTHROPIC_ROUTE = "/v1/messages"


def speaks_anthropic(path: str) -> bool:
    return path == ANTHROPIC_ROUTE or path.startswith(ANTHROPIC_ROUTE + "/")


def error_payload(path: str, error: ModelportError) -> dict[str, Any]:
    return error_body(error) if speaks_anthropic(path) else error.envelope()
