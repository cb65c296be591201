"""``ccflow gate`` itself, in a subprocess: bad flags exit 2 with a clear message; it starts,
answers on a free loopback port (validating against the local authority served on
127.0.0.1), and stops on SIGINT or SIGTERM. Every wait is bounded."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.support import free_port

from ccflow.authority import AuthorityServer

TIMEOUT = 20


def _env(**extra: str) -> dict[str, str]:
    """The test process's environment without any variable ccflow reads, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "CCFLOW_"))}
    return {**env, **extra}


VALID = {"CCFLOW_TENANT_ID": "contoso.onmicrosoft.com", "CCFLOW_AUDIENCE": "api://calc"}


def _gate(flags: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``ccflow gate`` with ``flags`` and ``env``, run to its end (it must not start)."""
    return subprocess.run(
        [sys.executable, "-m", "ccflow", "gate", *flags],
        capture_output=True,
        text=True,
        env=_env(**env),
        timeout=TIMEOUT,
        check=False,
    )


def test_an_address_the_gate_cannot_listen_on_exits_2() -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        done = _gate(["--role", "r", "--port", str(port)], VALID)
    assert done.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("flags", "env", "message"),
    [
        ([], VALID, "the gate needs --role or --rules"),
        (["--role", "r", "--port", "70000"], VALID, "--port must be 0..65535"),
        (["--role", "r", "--workers", "0"], VALID, "--workers must be 1 or more"),
        (["--role", "a,b"], VALID, "--role values cannot hold a comma"),
        (["--role", "r", "--upstream-header", "X-Oid"], VALID, "--upstream-header must be"),
        (["--rules", "/nonexistent/rules.toml"], VALID, "--rules: cannot read"),
        (["--role", "r"], {"CCFLOW_AUDIENCE": "api://calc"}, "CCFLOW_TENANT_ID"),
        (["--role", "r", "--port", "x"], VALID, "argument --port: invalid int value"),
    ],
)
def test_bad_flags_and_configuration_exit_2_with_a_clear_message(
    flags: list[str], env: dict[str, str], message: str
) -> None:
    done = _gate(flags, env)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


@pytest.fixture(scope="module")
def authority() -> Iterator[AuthorityServer]:
    with AuthorityServer() as server:
        yield server


def _start(server: AuthorityServer, rules: Path, workers: int) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    api = server.authority.api("calc-api")
    flags = ["--role", "invokeRole", "--port", str(port), "--rules", str(rules)]
    flags += ["--workers", str(workers)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "ccflow", "gate", *flags, "--upstream-header", "X-Oid=oid"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(
            CCFLOW_TENANT_ID=server.authority.tenant_id,
            CCFLOW_AUDIENCE=api.client_id,
            AZURE_AUTHORITY_HOST=server.url,
        ),
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + TIMEOUT
    while True:
        assert proc.poll() is None, proc.communicate(timeout=TIMEOUT)
        assert time.monotonic() < deadline, "the gate did not answer in time"
        try:
            httpx.get(f"{base}/healthz", timeout=1)
            return proc, base
        except httpx.TransportError:
            time.sleep(0.05)


@pytest.mark.parametrize(
    ("workers", "stop", "status"),
    [
        (1, signal.SIGINT, 0),  # Ctrl-C: uvicorn shuts down and returns
        (1, signal.SIGTERM, -signal.SIGTERM),  # uvicorn ends by its signal, after shutting down
        (2, signal.SIGTERM, 0),  # the supervisor stops its workers and returns
    ],
)
def test_the_command_serves_the_gate_and_stops_on_a_signal(
    authority: AuthorityServer,
    tmp_path: Path,
    workers: int,
    stop: signal.Signals,
    status: int,
) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text('[[route]]\npath = "/healthz"\npublic = true\n')
    proc, base = _start(authority, rules, workers)
    try:
        assert httpx.get(f"{base}/healthz").status_code == 200
        refused = httpx.get(f"{base}/calc")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith('Bearer realm="')
        token = authority.authority.mint(claims={"oid": "oid-1"})
        allowed = httpx.get(f"{base}/calc", headers={"Authorization": f"Bearer {token}"})
        assert allowed.status_code == 200
        assert allowed.headers["x-ccflow-roles"] == "invokeRole"
        assert allowed.headers["x-oid"] == "oid-1"
    finally:
        proc.send_signal(stop)
        try:
            out, err = proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
    assert proc.returncode == status, err
    assert f"ccflow gate on {base}" in err
    assert "Traceback" not in err
    assert out == ""
