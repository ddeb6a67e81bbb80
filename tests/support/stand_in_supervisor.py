"""A supervisor without processes for the on-demand loader's tests."""

from __future__ import annotations

import asyncio

from modelport.routing.deployments import Deployment, DeploymentStatus


class StandInSupervisor:
    """Launching makes a model ready after `load_s` (or failed); halting unloads it."""

    def __init__(self, load_s: float = 0.05, fails: bool = False) -> None:
        self.load_s, self.fails = load_s, fails
        self.launched: list[str] = []
        self.halted: list[str] = []

    def launch(self, deployment: Deployment) -> None:
        self.launched.append(deployment.name)
        deployment.set_status(DeploymentStatus.STARTING)

        async def become_ready() -> None:
            await asyncio.sleep(self.load_s)
            if self.fails:
                deployment.set_status(DeploymentStatus.FAILED, "no such file")
            elif deployment.status is DeploymentStatus.STARTING:
                deployment.set_status(DeploymentStatus.READY)

        asyncio.get_running_loop().create_task(become_ready())

    async def halt(self, deployment: Deployment, status=DeploymentStatus.UNLOADED, detail=""):
        self.halted.append(deployment.name)
        deployment.set_status(status, detail)
