"""Fixtures for the scripted model tests: a model, a running server, SDK clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import anthropic
import pytest
import pytest_asyncio

from ccgate.demo import DemoServer, ScriptedModel


@pytest.fixture
def model() -> ScriptedModel:
    """Return a fresh scripted model."""
    return ScriptedModel()


@pytest_asyncio.fixture
async def server(model: ScriptedModel) -> AsyncIterator[DemoServer]:
    """Serve ``model`` in the test's event loop."""
    async with DemoServer(model) as srv:
        yield srv


@pytest_asyncio.fixture
async def client(server: DemoServer) -> AsyncIterator[anthropic.AsyncAnthropic]:
    """Return an official async Anthropic client pointed at the demo server, no retries."""
    async with anthropic.AsyncAnthropic(base_url=server.url, api_key="demo", max_retries=0) as sdk:
        yield sdk


@pytest.fixture
def thread_server(model: ScriptedModel) -> Iterator[DemoServer]:
    """Serve ``model`` from a background thread, for sync code."""
    srv = DemoServer(model).start_in_thread()
    try:
        yield srv
    finally:
        srv.stop()
