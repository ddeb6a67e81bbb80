"""Model name (or alias) -> deployment lookup."""

from __future__ import annotations

from collections.abc import Iterable

from modelport.errors import InvalidRequestError, ModelNotFoundError
from modelport.routing.deployments import Deployment


class ModelRegistry:
    def __init__(self, deployments: Iterable[Deployment]) -> None:
        self._deployments = list(deployments)
        self._by_label: dict[str, Deployment] = {}
        for deployment in self._deployments:
            for label in [deployment.name, *deployment.config.aliases]:
                self._by_label[label] = deployment

    def __iter__(self):
        return iter(self._deployments)

    def __len__(self) -> int:
        return len(self._deployments)

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
        if deployment.is_embedding:
            raise InvalidRequestError(
                f"'{deployment.name}' is an embedding model; use /v1/embeddings",
                param="model", code="wrong_model_type",
            )
        return deployment

    def for_embeddings(self, name: str) -> Deployment:
        deployment = self.get(name)
        if not deployment.is_embedding and deployment.engine != "openai":
            raise InvalidRequestError(
                f"'{deployment.name}' is a chat model and does not serve embeddings; "
                "use an embedding model",
                param="model", code="wrong_model_type",
            )
        return deployment
