"""Shared fixtures: the scripted model, a real ccgate server, SDK clients, leftover checks."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from ccgate.claude import ClaudeRunner, RunnerConfig
from ccgate.config import load_settings
from ccgate.demo import DemoServer, ScriptedModel
from tests.gateway_testing import Gateway, Recorder, start_gateway, wait_for_no_processes

# The cost markers, cheapest first; every test carries exactly one of them, so that
# ``-m unit`` or ``-m "not cli"`` leaves the slow ones out (docs/development.md#tests).
COSTS = ("unit", "server", "cli")


@pytest.hookimpl(tryfirst=True)  # before -m deselects: every collected test is checked
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse to run a suite in which a test has no cost marker, or more than one."""
    wrong = []
    for item in items:
        costs = sorted({mark.name for mark in item.iter_markers() if mark.name in COSTS})
        if len(costs) != 1:
            wrong.append(f"  {item.nodeid}: {', '.join(costs) or 'no cost marker'}")
    if wrong:
        raise pytest.UsageError(
            "each test needs exactly one of the markers "
            + ", ".join(COSTS)
            + " (a module's pytestmark, the test's own, or a fixture param's):\n"
            + "\n".join(wrong)
        )


@pytest.fixture(scope="session")
def demo() -> Iterator[DemoServer]:
    """Serve one scripted model for the whole run (reset before each test that uses it)."""
    server = DemoServer(ScriptedModel()).start_in_thread()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def model(demo: DemoServer) -> ScriptedModel:
    """Return the scripted model, with its record and script cleared."""
    demo.model.reset()
    return demo.model


@pytest.fixture(scope="session")
def cli_models_cache(demo: DemoServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ask the real CLI for its models once per run; return the cache file it filled.

    A gateway reads them at start unless its data dir holds that cache for the same
    CLI binary: seeding every test's data dir with it spares a CLI start per gateway.
    """
    folder = tmp_path_factory.mktemp("cli-models")
    config = RunnerConfig(data_dir=folder, upstream_url=demo.url, upstream_api_key="k")
    runner = ClaudeRunner(config)
    # In a thread of its own: a browser test's Playwright may be running a loop in this one.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        models, _ = pool.submit(asyncio.run, runner.cli_models()).result()
    assert models, "the CLI listed no models"
    return folder / "cache" / "cli-models.json"


@pytest.fixture
def data_dir(tmp_path: Path, cli_models_cache: Path) -> Iterator[Path]:
    """Return a fresh data dir and check no CLI process of it outlives the test."""
    path = tmp_path / "data"
    (path / "cache").mkdir(parents=True)
    shutil.copy(cli_models_cache, path / "cache" / "cli-models.json")
    yield path
    left = wait_for_no_processes(path)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
    assert not left, f"CLI processes outlived the test: {left}"


@pytest.fixture
def make_gateway(demo: DemoServer, data_dir: Path) -> Iterator[Callable[..., Gateway]]:
    """Return a factory of gateways pointed at the scripted model; all stop after the test."""
    started: list[Gateway] = []

    def make(
        runner: Any = None,
        environ: Mapping[str, str] | None = None,
        recorder: Recorder | None = None,
        **overrides: Any,
    ) -> Gateway:
        flags: dict[str, Any] = {
            "data_dir": data_dir,
            "upstream_url": demo.url,
            "upstream_api_key": "demo-upstream-key",
            "upstream_retries": 0,
            **overrides,
        }
        settings = load_settings(flags, {})
        gateway = start_gateway(settings, runner, environ, recorder)
        started.append(gateway)
        return gateway

    yield make
    for gateway in started:
        gateway.stop()


@pytest.fixture
def gateway(make_gateway: Callable[..., Gateway], model: ScriptedModel) -> Gateway:
    """Return a running gateway with default settings (auth_mode none)."""
    return make_gateway()


@pytest.fixture
def oai(gateway: Gateway) -> Iterator[openai.OpenAI]:
    """Return the official OpenAI client pointed at the gateway (no retries)."""
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0) as client:
        yield client


@pytest.fixture
def ant(gateway: Gateway) -> Iterator[anthropic.Anthropic]:
    """Return the official Anthropic client pointed at the gateway (no retries)."""
    with anthropic.Anthropic(base_url=gateway.url, api_key="unused", max_retries=0) as client:
        yield client
