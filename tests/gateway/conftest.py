"""The daemon's parts in this process, over the in-memory backend, driven through their ASGI app.

:func:`faasd.assembly.assemble` wires the service, the autoscaler, the invoke path, the async queue and
the management API exactly as ``faasd up`` does; the provider is :class:`MemoryProvider`, whose
replicas are HTTP servers on 127.0.0.1 in this test's trio loop (so every call the gateway proxies
crosses a real socket, with the real call token). Requests go to the ASGI app directly (httpx's
``ASGITransport``): no daemon process, no HTTP server in front, no zipapp. The end-to-end tests in
tests/e2e cover those; these cover the behaviour behind them in seconds.
"""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from faasd.assembly import Parts, assemble
from faasd.calltoken import CallToken
from faasd.config import DaemonConfig
from faasd.providers.memory import MemoryProvider, Program
from faasd.providers.types import FunctionStatus
from faasd.queue.store import QueueDb
from faasd.registry import EndpointRegistry
from faasd.store import AsyncStore, Store
from tests.helpers import scaled

PASSWORD = "in-process-test-password"
CALL_TOKEN = b"in-process-call-token-0123456789"


@dataclass
class Gateway:
    """A started set of parts and a client for its ASGI app (``admin`` carries the credentials)."""

    parts: Parts
    provider: MemoryProvider
    registry: EndpointRegistry
    client: httpx.AsyncClient
    admin: dict[str, str]

    async def deploy(self, name: str, fprocess: str = "cat", **document: Any) -> httpx.Response:
        body = {"service": name, "envProcess": fprocess, **document}
        return await self.client.post("/system/functions", json=body, headers=self.admin)

    async def function(self, name: str) -> dict[str, Any]:
        answer = await self.client.get(f"/system/function/{name}", headers=self.admin)
        assert answer.status_code == 200, answer.text
        document: dict[str, Any] = answer.json()
        return document

    async def wait_available(self, name: str, count: int, timeout_s: float = 10.0) -> None:
        with trio.fail_after(scaled(timeout_s)):
            while len(self.registry.get(name)) != count:
                await trio.sleep(0.005)

    async def status(self, name: str) -> FunctionStatus:
        return await self.parts.service.status(name)


@pytest.fixture
async def make_gateway(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Any]:
    """``await make_gateway(**config)`` -> a started :class:`Gateway` (at most one per test)."""
    opened: list[tuple[Parts, AsyncStore, QueueDb]] = []

    async def make(
        *, programs: Mapping[str, Program] | None = None, start_delay_s: float = 0.0, **settings: Any
    ) -> Gateway:
        config = DaemonConfig(state_dir=str(tmp_path), **settings)
        store = AsyncStore(await trio.to_thread.run_sync(Store.open, os.path.join(tmp_path, "faasd.db")))
        queue_db = await trio.to_thread.run_sync(QueueDb.open, os.path.join(tmp_path, "queue.db"))
        registry = EndpointRegistry()
        token = CallToken(CALL_TOKEN)
        provider = MemoryProvider(
            registry=registry,
            secrets=store.get_secret,
            programs=programs,
            call_token=token,
            start_delay_s=start_delay_s,
        )
        parts = assemble(
            config,
            provider=provider,
            registry=registry,
            store=store,
            queue_db=queue_db,
            call_token=token,
            password=PASSWORD,
        )
        opened.append((parts, store, queue_db))
        await nursery.start(provider.run)
        await parts.service.load()
        await parts.queue.load()
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=parts.app), base_url="http://faasd.test")
        credentials = base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
        return Gateway(parts, provider, registry, client, {"Authorization": f"Basic {credentials}"})

    yield make
    for parts, store, queue_db in opened:
        await parts.pool.aclose()
        await store.aclose()
        await queue_db.aclose()
