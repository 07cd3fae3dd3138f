"""``GET /system/scaling/NAME`` before the autoscaler's first decision for a function: the reason states
the loop's real period (it said "every 2 s" while the loop ticked every second)."""

from __future__ import annotations

import base64
from dataclasses import dataclass

import pytest

from faasd.gateway import BasicAuth, create_management_app
from faasd.providers.types import FunctionSpec, FunctionStatus
from faasd.registry import EndpointRegistry
from faasd.scaler.loop import TICK_S, Autoscaler
from faasd.scaler.meter import LoadMeter

PASSWORD = "a-password-for-tests-only"


@dataclass
class OneFunction:
    """The slice of FunctionService the route and the autoscaler's settings read: one function, ``f``."""

    spec: FunctionSpec

    async def status(self, name: str) -> FunctionStatus:
        return FunctionStatus(spec=self.spec, replicas=1, available_replicas=1)

    def stored(self, name: str) -> None:
        return None


@pytest.mark.parametrize("tick_s", [TICK_S, 0.5])
async def test_no_decision_yet_names_the_real_tick(tick_s: float) -> None:
    service = OneFunction(FunctionSpec(name="f", env_process="cat"))
    autoscaler = Autoscaler(service, EndpointRegistry(), LoadMeter(lambda: 0.0), tick_s=tick_s)  # type: ignore[arg-type]
    app = create_management_app(
        service=service,  # type: ignore[arg-type]
        auth=BasicAuth("admin", PASSWORD),
        provider_name="local",
        orchestration="local",
        max_body_bytes=1024,
        health=lambda: (True, ""),
        autoscaler=autoscaler,
    )
    token = base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
    answer = await app.test_client().get("/system/scaling/f", headers={"Authorization": f"Basic {token}"})
    assert answer.status_code == 200
    reason = (await answer.get_json())["reason"]
    assert reason == f"no decision yet (the autoscaler decides every {tick_s:g} s)", reason
