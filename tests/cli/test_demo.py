"""``ccflow demo`` run for real, in a subprocess: every step shown and behaving, exit 0."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def demo() -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "CCFLOW_"))}
    return subprocess.run(
        [sys.executable, "-m", "ccflow", "demo"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_demo_exits_0_with_nothing_on_stderr(demo: subprocess.CompletedProcess[str]) -> None:
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert demo.stderr == ""
    assert "All 6 steps behaved as expected" in demo.stdout
    assert "FAILED" not in demo.stdout


def _step(demo: subprocess.CompletedProcess[str], number: int) -> str:
    text = demo.stdout.split(f"\n{number}. ", 1)[1]
    return text.split(f"\n{number + 1}. ", 1)[0]


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        (1, ["calc-api", "invokeRole", "calc-client", "reader-client", "(nothing)"]),
        (2, ["POST http://127.0.0.1:", "/oauth2/v2.0/token", "client_secret=(hidden)", "200 OK"]),
        (3, ['"invokeRole"', "aud", "azp", "(in 59 min)"]),
        (4, ["GET /calc/v1/add/1/1", "-> 200 OK", '"result":2']),
        (5, ["-> 403 Forbidden", 'error="insufficient_scope"', "roles claim: absent"]),
        (6, ["tampered token", "-> 401 Unauthorized", 'error="invalid_token"', "signature"]),
    ],
)
def test_demo_step_is_shown_and_behaves(
    demo: subprocess.CompletedProcess[str], number: int, expected: list[str]
) -> None:
    step = _step(demo, number)
    for text in expected:
        assert text in step
    assert "\n   ok: " in step


def test_demo_never_prints_a_secret(demo: subprocess.CompletedProcess[str]) -> None:
    from ccflow.authority import Authority

    authority = Authority()
    for name in ("calc-client", "reader-client"):
        secret = authority.client(name).secret
        assert secret
        assert secret not in demo.stdout


def test_demo_says_the_servers_are_stopped(demo: subprocess.CompletedProcess[str]) -> None:
    assert demo.stdout.rstrip().endswith("Both servers are stopped.")


def test_demo_leaves_nothing_listening(demo: subprocess.CompletedProcess[str]) -> None:
    pattern = r"^   (?:local authority|calc API) +http://127\.0\.0\.1:(\d+)"
    ports = re.findall(pattern, demo.stdout, re.MULTILINE)
    assert len(ports) == 2
    for port in ports:
        with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
            sock.connect(("127.0.0.1", int(port)))


def test_demo_in_process_exits_0_and_leaves_no_thread(capsys: pytest.CaptureFixture[str]) -> None:
    import threading

    from ccflow.cli import main

    before = set(threading.enumerate())
    assert main(["demo"]) == 0
    assert "All 6 steps behaved as expected" in capsys.readouterr().out
    assert set(threading.enumerate()) <= before


def test_demo_ignores_api_settings_left_in_the_shell() -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "CCFLOW_"))},
        "CCFLOW_ISSUER": "https://issuer.example.com",
        "CCFLOW_ALLOWED_CLIENTS": "someone-else",
        "AZURE_AUTHORITY_HOST": "https://login.example.com",
    }
    result = subprocess.run(
        [sys.executable, "-m", "ccflow", "demo"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY"])
def test_demo_works_behind_a_proxy_setting(
    variable: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # With a proxy in the environment (as behind a corporate proxy) and no NO_PROXY for
    # loopback, httpx sent the demo's loopback requests to the proxy and the demo failed.
    from ccflow.cli import main

    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, "http://127.0.0.1:9")  # nothing listens there
    assert main(["demo"]) == 0, capsys.readouterr()
    assert "All 6 steps behaved as expected" in capsys.readouterr().out
    assert "NO_PROXY" not in os.environ
    assert "no_proxy" not in os.environ


def test_demo_ignores_a_stale_ssl_cert_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # SSL_CERT_FILE left pointing at a stopped local authority's CA (its directory is removed
    # on exit) made every httpx client raise FileNotFoundError, though the demo is plain HTTP.
    from ccflow.cli import main

    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "gone" / "ca.pem"))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "gone"))
    assert main(["demo"]) == 0, capsys.readouterr()
    assert "All 6 steps behaved as expected" in capsys.readouterr().out
    assert os.environ["SSL_CERT_FILE"] == str(tmp_path / "gone" / "ca.pem")
