"""Errors of providers that run inside the gateway, in the one error tree."""

from __future__ import annotations

from modelport.errors import UpstreamError


class ProviderFault(UpstreamError):
    """A provider plugin raised or returned something unusable: a 502 naming the plugin.

    Not retried (a broken plugin does not mend itself in a second), but fallbacks and
    cool-down apply. A plugin that wants a retry raises UpstreamError(status=503) itself.
    """

    def __init__(self, message: str, **kw):  # noqa: ANN003
        super().__init__(message, status=502, type="provider_error", **kw)
