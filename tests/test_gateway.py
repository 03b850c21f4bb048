"""Processes and limits: disconnects, backpressure, shutdown, secrets, auth, health."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from ccgate.demo import DemoServer, ScriptedModel
from tests.gateway_testing import Gateway, cli_processes, wait_for_no_processes, wait_until

STALL = {
    "model": "sonnet",
    "max_tokens": 50,
    "stream": True,
    "messages": [{"role": "user", "content": "wait [[demo: stall=120]]"}],
}


def _stream_in_background(url: str, body: dict[str, object]) -> threading.Thread:
    def run() -> None:
        try:
            with httpx.stream("POST", url, json=body, timeout=180) as response:
                response.read()
        except httpx.HTTPError:
            pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.cli
def test_disconnect_cancels_the_turn_and_its_process(
    gateway: Gateway, model: ScriptedModel, data_dir: Path
) -> None:
    with (
        httpx.Client(timeout=60) as client,
        client.stream("POST", gateway.url + "/v1/messages", json=STALL) as response,
    ):
        assert wait_until(lambda: bool(cli_processes(data_dir)), within=30)
        assert wait_until(lambda: bool(model.conversation_requests()), within=30)
        # Leave mid-turn: closing the response drops the connection.
        del response
    assert wait_for_no_processes(data_dir) == []
    assert wait_until(lambda: gateway.state.gate.active == 0)


@pytest.mark.cli
def test_non_streamed_disconnect_also_cancels(
    gateway: Gateway, model: ScriptedModel, data_dir: Path
) -> None:
    body = {**STALL, "stream": False}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(gateway.url + "/v1/messages", json=body, timeout=httpx.Timeout(60, read=3))
    assert wait_for_no_processes(data_dir) == []
    assert wait_until(lambda: gateway.state.gate.active == 0)


@pytest.mark.cli
def test_queue_overflow_is_a_429_with_retry_after(
    make_gateway: Callable[..., Gateway], model: ScriptedModel, data_dir: Path
) -> None:
    gateway = make_gateway(max_concurrent=1, max_queue=1)
    busy = _stream_in_background(gateway.url + "/v1/messages", STALL)
    assert wait_until(lambda: gateway.state.gate.active == 1)
    queued = _stream_in_background(gateway.url + "/v1/messages", STALL)
    assert wait_until(lambda: gateway.state.gate.queued == 1)
    with (
        openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0) as oai,
        pytest.raises(openai.RateLimitError) as caught,
    ):
        oai.chat.completions.create(model="sonnet", messages=[{"role": "user", "content": "x"}])
    headers = caught.value.response.headers
    assert int(headers["retry-after"]) >= 1
    assert headers["x-should-retry"] == "true"
    assert "max_concurrent=1" in caught.value.message
    health = httpx.get(gateway.url + "/health").json()
    assert health["turns"] == {
        "active": 1,
        "queued": 1,
        "waiting_for_tools": 0,
        "max_concurrent": 1,
        "max_queue": 1,
    }
    gateway.stop()
    busy.join(timeout=30)
    queued.join(timeout=30)
    assert wait_for_no_processes(data_dir) == []


@pytest.mark.cli
def test_no_ccgate_secret_reaches_the_cli_environment(
    make_gateway: Callable[..., Gateway],
    model: ScriptedModel,
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = "ccg_shared_secret_value_35Mt3_LYvQPCu-OpuXyNK0RI"
    monkeypatch.setenv("CCGATE_API_KEY", secret)
    monkeypatch.setenv("CCGATE_ADMIN_KEY", "admin-secret-Mq11TXMOe-pce6Kbj79WsfE7rRvDJck6")
    gateway = make_gateway(
        auth_mode="shared",
        api_key=secret,
        admin_key="admin-secret-Mq11TXMOe-pce6Kbj79WsfE7rRvDJck6",
    )
    body = {**STALL}
    thread = threading.Thread(
        target=lambda: (
            httpx.post(
                gateway.url + "/v1/messages", json=body, headers={"x-api-key": secret}, timeout=5
            )
            if False
            else _post_quietly(gateway.url, body, secret)
        ),
        daemon=True,
    )
    thread.start()
    assert wait_until(lambda: bool(cli_processes(data_dir)), within=30)
    pid = cli_processes(data_dir)[0]
    environ = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    assert secret not in environ
    assert "admin-secret-Mq11TXMOe-pce6Kbj79WsfE7rRvDJck6" not in environ
    variables = dict(v.split("=", 1) for v in environ.split("\0") if "=" in v)
    assert variables["ANTHROPIC_API_KEY"] == "demo-upstream-key"
    assert variables["CLAUDE_CONFIG_DIR"].startswith(str(data_dir))
    assert variables.get("CCGATE_API_KEY", "") == ""
    gateway.stop()
    thread.join(timeout=30)


def _post_quietly(url: str, body: dict[str, object], key: str) -> None:
    with contextlib.suppress(httpx.HTTPError):
        httpx.post(url + "/v1/messages", json=body, headers={"x-api-key": key}, timeout=120)


@pytest.mark.cli
def test_shared_auth_over_a_real_server(
    make_gateway: Callable[..., Gateway], model: ScriptedModel
) -> None:
    key = "a-long-shared-key-for-tests-Nee_VbScO42cdv-xjatJ454"
    gateway = make_gateway(auth_mode="shared", api_key=key)
    with (
        anthropic.Anthropic(base_url=gateway.url, api_key="wrong-key", max_retries=0) as ant,
        pytest.raises(anthropic.AuthenticationError),
    ):
        ant.messages.create(
            model="sonnet", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    with anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0) as ant:
        reply = ant.messages.create(
            model="sonnet", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    assert reply.content
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0) as oai:
        assert (
            oai.chat.completions.create(model="sonnet", messages=[{"role": "user", "content": "y"}])
            .choices[0]
            .message.content
            == "You said: y"
        )
    health = httpx.get(gateway.url + "/health")
    assert health.status_code == 200
    assert key not in health.text and "demo-upstream-key" not in health.text


@pytest.mark.cli
def test_health_never_starts_a_cli_and_auth_probe_is_real(
    gateway: Gateway, model: ScriptedModel, data_dir: Path
) -> None:
    health = httpx.get(gateway.url + "/health").json()
    assert health["status"] == "ok"
    assert health["cli_processes"] == 0
    assert model.requests == []
    auth = httpx.get(gateway.url + "/health/auth", timeout=60)
    assert auth.status_code == 200
    assert auth.json()["status"] == "healthy"
    assert len(model.conversation_requests()) == 1
    httpx.get(gateway.url + "/health/auth", timeout=60)
    assert len(model.conversation_requests()) == 1  # cached


@pytest.mark.cli
def test_auth_probe_is_unhealthy_only_after_two_failures(
    make_gateway: Callable[..., Gateway], model: ScriptedModel
) -> None:
    gateway = make_gateway(health_probe_ttl=0)
    from ccgate.demo import Reply

    model.script(Reply(error_status=401))
    first = httpx.get(gateway.url + "/health/auth", timeout=60)
    assert first.status_code == 200 and first.json()["status"] == "degraded"
    assert "claude /login" in first.json()["error"]
    model.script(Reply(error_status=401))
    second = httpx.get(gateway.url + "/health/auth", timeout=60)
    assert second.status_code == 503 and second.json()["status"] == "unhealthy"
    third = httpx.get(gateway.url + "/health/auth", timeout=60)
    assert third.status_code == 200 and third.json()["status"] == "healthy"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.cli
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_shutdown_answers_running_turns_and_leaves_no_process(
    demo: DemoServer, model: ScriptedModel, data_dir: Path, sig: signal.Signals
) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCGATE_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ccgate",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--upstream-url",
            demo.url,
            "--upstream-api-key",
            "x",
            "--upstream-retries",
            "0",
            "--shutdown-timeout",
            "3",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    answers: list[httpx.Response] = []

    def wait_for_answer() -> None:
        with contextlib.suppress(httpx.HTTPError):
            answers.append(
                httpx.post(url + "/v1/messages", json={**STALL, "stream": False}, timeout=60)
            )

    try:
        url = f"http://127.0.0.1:{port}"
        assert wait_until(lambda: _up(url), within=30)
        waiter = threading.Thread(target=wait_for_answer, daemon=True)
        waiter.start()
        assert wait_until(lambda: bool(cli_processes(data_dir)), within=30)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
        waiter.join(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "listening on http://127.0.0.1:" in out
    assert "upstream:" in out and "auth mode:" in out and "data dir:" in out
    assert proc.returncode == 0, err
    assert wait_for_no_processes(data_dir, within=5) == []
    assert all(json.loads(line) for line in err.splitlines() if line.startswith("{"))
    # The running turn was answered cleanly, in the protocol's own shape.
    assert len(answers) == 1
    assert answers[0].status_code == 503
    assert answers[0].json()["error"]["type"] == "api_error"
    assert "shutting down" in answers[0].json()["error"]["message"]


@pytest.mark.cli
def test_an_idle_gateway_stops_at_once_and_says_nothing_odd(data_dir: Path) -> None:
    """Ctrl-C on the README's ``ccgate serve --demo``: exit 0, no process, no warning."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCGATE_")}
    argv = [sys.executable, "-m", "ccgate", "serve", "--demo", "--port", str(port)]
    proc = subprocess.Popen(
        [*argv, "--data-dir", str(data_dir)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_until(lambda: _up(f"http://127.0.0.1:{port}"), within=30)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "never awaited" not in err and "Traceback" not in err, err
    assert wait_for_no_processes(data_dir, within=5) == []


def _up(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.server
def test_network_bind_without_auth_is_refused(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ccgate", "serve", "--host", "0.0.0.0", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("CCGATE_")},
    )
    assert result.returncode == 2
    assert "CCGATE_AUTH_MODE=shared" in result.stderr
