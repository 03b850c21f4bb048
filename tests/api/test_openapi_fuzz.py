"""The OpenAPI document against the real gateway on the scripted model: schemathesis, all checks.

Schemathesis reads ``/openapi.json`` and sends what it generates from it (the
examples, the coverage of every boundary, random fuzzing, stateful sequences
that follow the links it infers) to a gateway whose turns run the real Claude
Code CLI against the scripted model, and checks every answer: no 5xx, only
documented statuses, content types, headers and bodies (SSE events too),
schema-valid requests accepted and invalid ones refused, 405 with ``Allow``
for undocumented methods, and more (``--checks all``).

Bounded: a few examples per operation, a timeout per request, the test's own
timeout. Only the endless stream, ``GET /v1/loops/{loop_id}/events``, is left
out. The few places where the API refuses a request the schema cannot
describe as invalid are listed in ``CONFIG`` with the reason.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.gateway_testing import wait_until

pytestmark = [pytest.mark.cli, pytest.mark.timeout(400)]

ADMIN_KEY = "schemathesis-admin-key-0123456789abcdef"
EXAMPLES_PER_OPERATION = 5
ENDLESS = "/v1/loops/{loop_id}/events"
SESSION = "schemathesis-session"

# 400 is what these answer to a schema-valid request that breaks a rule of meaning, not of form.
_MEANING = ["2xx", "400", "401", "403", "404", "409", "429", "5xx"]
CONFIG = f"""
# Objects that exist, so the operations on them get past 404 (made by the test first).
[parameters]
"path.key" = "{SESSION}"
"path.key_id" = "KEY_ID"

# The conversation's rules: the last message comes from the user, each tool result answers a
# call of the message before, call ids are unique (and thinking.budget_tokens < max_tokens).
[[operations]]
include-name = [
    "POST /v1/chat/completions",
    "POST /v1/messages",
    "POST /v1/responses",
    "POST /v1/responses/input_tokens",
]
checks.positive_data_acceptance.expected-statuses = {json.dumps(_MEANING)}

# expires_at must lie in the future, which no schema can say.
[[operations]]
include-name = ["POST /admin/keys", "PATCH /admin/keys/{{key_id}}"]
checks.positive_data_acceptance.expected-statuses = {json.dumps(_MEANING)}

# after and before are each a cursor; both at once is refused.
[[operations]]
include-name = "GET /v1/loops"
checks.positive_data_acceptance.expected-statuses = {json.dumps(_MEANING)}

# A login account takes no secret, a token or key account needs one; the default account
# cannot be removed or given a secret (its credential is a setting).
[[operations]]
include-name = [
    "POST /admin/accounts",
    "PATCH /admin/accounts/{{id_or_name}}",
    "DELETE /admin/accounts/{{id_or_name}}",
]
checks.positive_data_acceptance.expected-statuses = {json.dumps(_MEANING)}

# An archived loop takes no messages (400 loop_archived).
[[operations]]
include-name = "POST /v1/loops/{{loop_id}}/messages"
checks.positive_data_acceptance.expected-statuses = {json.dumps(_MEANING)}

"""


@contextlib.contextmanager
def demo_server(data_dir: Path, log: Path) -> Iterator[str]:
    """Run ``ccgate serve --demo`` (the scripted model in-process) as a subprocess; yield its URL.

    A process of its own, not a thread of the test's: schemathesis and the server
    then do not share one interpreter lock.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCGATE_")}
    argv = [
        *(sys.executable, "-m", "ccgate", "serve", "--demo", "--port", str(port)),
        *("--data-dir", str(data_dir), "--admin-key", ADMIN_KEY, "--log-level", "warning"),
        *("--loop-idle-timeout", "2", "--max-queue", "64", "--shutdown-timeout", "5"),
    ]
    url = f"http://127.0.0.1:{port}"
    with log.open("w") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            assert wait_until(lambda: _up(url), within=30), log.read_text()[-2000:]
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _up(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_schemathesis_all_checks_find_nothing(data_dir: Path, tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with demo_server(data_dir, log) as url:
        result, output = _schemathesis(url, tmp_path)
    operations, cases = result["operations"], result["test_cases"]
    print(
        f"schemathesis {result['schemathesis_version']}: {operations['tested']} of "
        f"{operations['total']} operations, {cases['generated']} test cases, "
        f"{cases['unique_failures']} failures, {len(result['errors'])} errors, "
        f"{result['running_time']:.0f} s; phases "
        + ", ".join(f"{name} {p['status']}" for name, p in result["phases"].items())
    )
    assert result["exit_code"] == 0, output[-12_000:]
    assert result["failures"] == [] and result["errors"] == []
    assert cases["with_failures"] == 0 and cases["generated"] > 500
    # Every operation but the endless stream was tested.
    assert operations["total"] - 1 == operations["selected"] == operations["tested"]
    assert "request_crashed" not in log.read_text()


def _schemathesis(url: str, tmp_path: Path) -> tuple[dict[str, Any], str]:
    """Make the objects the path parameters name, run schemathesis; return its report."""
    with httpx.Client(base_url=url, headers={"authorization": f"Bearer {ADMIN_KEY}"}) as client:
        client.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "hi"}]},
            headers={"x-session-id": SESSION},
            timeout=60,
        ).raise_for_status()
        key = client.post("/admin/keys", json={"name": "schemathesis"}).json()
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG.replace("KEY_ID", key["id"]))
    report = tmp_path / "report.json"
    argv = [
        *(sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "--no-color"),
        *("run", f"{url}/openapi.json", "--checks", "all"),
        # Two DELETEs keep what they end readable: DELETE /v1/loops/{id} archives a loop (it
        # stays readable with archived: true, the Loop API's contract) and DELETE
        # /admin/keys/{id} revokes a key (readable with revoked_at set, an audit trail).
        # "Deleted resource still available" cannot be told so per operation in its stateful
        # phase; the one hard delete, DELETE /v1/sessions/{key}, is pinned in test_sessions.
        *("--exclude-checks", "use_after_free"),
        *("--max-examples", str(EXAMPLES_PER_OPERATION), "--seed", "20261129"),
        *("--exclude-path", ENDLESS, "--request-timeout", "60", "--workers", "2"),
        *("--header", f"Authorization: Bearer {ADMIN_KEY}"),
        *("--generation-database", "none", "--no-shrink"),
        *("--report", "json", "--report-json-path", str(report)),
    ]
    run = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, timeout=360)
    output = run.stdout + run.stderr
    assert report.exists(), output[-12_000:]
    result: dict[str, Any] = json.loads(report.read_text())
    return result, output
