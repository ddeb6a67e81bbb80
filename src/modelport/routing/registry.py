"""Model name (or alias) -> deployment lookup, and the models a request may be served by.

The registry is the one owner of which deployments exist: a reload swaps its contents in
place (one synchronous step, so a request sees either the old set or the new one), and
everything holding the registry (metrics, health, the loader) sees the change.
"""

from __future__ import annotations

from collections.abc import Iterable

from modelport.errors import InvalidRequestError, ModelNotFoundError
from modelport.routing.deployments import Deployment


class ModelRegistry:
    def __init__(self, deployments: Iterable[Deployment]) -> None:
        self.replace(deployments)

    def replace(self, deployments: Iterable[Deployment]) -> None:
        """Serve exactly `deployments` from now on (their fallbacks already linked)."""
        listed = list(deployments)
        by_label: dict[str, Deployment] = {}
        for deployment in listed:
            for label in [deployment.name, *deployment.config.aliases]:
                by_label[label] = deployment
        self._deployments, self._by_label = listed, by_label
        self._plans = {d.name: (d, *d.fallbacks) for d in listed}

    def named(self, name: str) -> Deployment | None:
        """The deployment of a model's own name or alias, or None."""
        return self._by_label.get(name)

    def __iter__(self):
        return iter(self._deployments)

    def __len__(self) -> int:
        return len(self._deployments)

    def __contains__(self, name: object) -> bool:
        """Whether `name` is a served model's own name (not an alias)."""
        return name in self._plans

    def get(self, name: str) -> Deployment:
        deployment = self._by_label.get(name)
        if deployment is None:
            served = ", ".join(d.name for d in self._deployments) or "none"
            raise ModelNotFoundError(
                f"The model '{name}' does not exist or is not served here (served: {served})",
                param="model",
            )
        return deployment

    def for_chat(self, name: str) -> Deployment:
        deployment = self.get(name)
        if not deployment.capabilities.chat:
            kind, route = _NOT_CHAT.get(deployment.kind, ("not a chat model", "another model"))
            raise InvalidRequestError(
                f"'{deployment.name}' is {kind}; use {route}",
                param="model", code="wrong_model_type",
            )
        return deployment

    def for_completions(self, name: str) -> Deployment:
        deployment = self.for_chat(name)
        if not deployment.capabilities.completions:
            raise InvalidRequestError(
                f"'{deployment.name}' serves only /v1/chat/completions, not the legacy "
                "/v1/completions", param="model", code="wrong_model_type",
            )
        return deployment

    def for_embeddings(self, name: str) -> Deployment:
        deployment = self.get(name)
        if not deployment.capabilities.embeddings:
            raise InvalidRequestError(
                f"'{deployment.name}' is a {deployment.kind} model and does not serve "
                "embeddings; use an embedding model",
                param="model", code="wrong_model_type",
            )
        return deployment

    def for_rerank(self, name: str) -> Deployment:
        deployment = self.get(name)
        if not deployment.capabilities.rerank:
            raise InvalidRequestError(
                f"'{deployment.name}' is a {deployment.kind} model and cannot rerank; use a "
                "reranker (engine: cross-encoder, or llamacpp with reranking: true) or an "
                "embedding model",
                param="model", code="wrong_model_type",
            )
        return deployment

    def for_audio(self, name: str) -> Deployment:
        deployment = self.get(name)
        if not deployment.capabilities.audio:
            raise InvalidRequestError(
                f"'{deployment.name}' is a {deployment.kind} model and does not transcribe "
                "audio; use a speech-to-text model", param="model", code="wrong_model_type",
            )
        return deployment

    def plan(self, deployment: Deployment, *, stream: bool = False, tools: bool = False,
             vision: bool = False, rerank: bool = False) -> tuple[Deployment, ...]:
        """The requested model then its fallbacks, leaving out fallbacks that cannot take
        this request; the requested model itself answers 400 when it cannot."""
        plan = self._plans[deployment.name]
        if not stream and not tools and not vision and not rerank:
            return plan  # the common case: no filtering, no new tuple per request
        needs = (("stream", stream), ("tools", tools), ("vision", vision), ("rerank", rerank))
        for need, present in needs:
            if present and not getattr(deployment.capabilities, _CAPABILITY[need]):
                raise _unsupported(deployment, need)
        return tuple(d for d in plan if all(
            not present or getattr(d.capabilities, _CAPABILITY[need]) for need, present in needs))


_NOT_CHAT = {"embedding": ("an embedding model", "/v1/embeddings"),
             "rerank": ("a reranker", "/v1/rerank")}
_CAPABILITY = {"stream": "streaming", "tools": "tools", "vision": "vision", "rerank": "rerank"}


def _unsupported(deployment: Deployment, need: str) -> InvalidRequestError:
    if need == "vision":
        return InvalidRequestError(
            f"model '{deployment.name}' takes text only (no vision): it cannot read image, "
            "audio or file content parts; send text or use a multimodal model",
            param="messages", code="unsupported_content")
    if need == "tools" and deployment.capabilities.tools_note:
        return InvalidRequestError(
            f"model '{deployment.name}' cannot call tools: {deployment.capabilities.tools_note}",
            param="tools", code="tools_unsupported")
    return InvalidRequestError(f"model '{deployment.name}' does not support `{need}`", param=need)
