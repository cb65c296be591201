"""``ccflow demo`` run for real, in a subprocess: every step shown and behaving, exit 0."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest


def _shell_environment() -> dict[str, str]:
    """This process's environment without ccflow's or Azure's settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "CCFLOW_"))}


def _demo(env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m ccflow demo`` run in ``env`` (and ``cwd``), its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "ccflow", "demo"],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def demo() -> subprocess.CompletedProcess[str]:
    return _demo(_shell_environment())


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
        **_shell_environment(),
        "CCFLOW_ISSUER": "https://issuer.example.com",
        "CCFLOW_ALLOWED_CLIENTS": "someone-else",
        "AZURE_AUTHORITY_HOST": "https://login.example.com",
    }
    result = _demo(env)
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


def _booby_trapped(directory: Path) -> Path:
    """``directory`` with an ``examples/calc_api`` package that raises when imported."""
    trap = directory / "examples" / "calc_api"
    trap.mkdir(parents=True)
    boom = "raise RuntimeError('BOOBY TRAP: imported examples/ from the current directory')\n"
    for path in (directory / "examples" / "__init__.py", trap / "__init__.py", trap / "app.py"):
        path.write_text(boom)
    return directory


def _clean_environment() -> dict[str, str]:
    """This process's environment without ccflow's, Azure's or Python's path settings."""
    return {k: v for k, v in _shell_environment().items() if k != "PYTHONPATH"}


def test_demo_never_imports_examples_from_the_current_directory(tmp_path: Path) -> None:
    # `python -m` puts the current directory first on sys.path: an `examples` package there
    # (anyone's) must not be what the demo serves.
    result = _demo(_clean_environment(), cwd=_booby_trapped(tmp_path))
    assert "BOOBY TRAP" not in result.stdout + result.stderr
    assert result.returncode == 0, result.stdout + result.stderr


def test_demo_ignores_an_examples_package_already_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import types

    from ccflow.cli import main

    for name in ("examples", "examples.calc_api", "examples.calc_api.app"):
        trap = types.ModuleType(name)
        trap.__path__ = []  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, name, trap)  # no create_app: using it fails
    assert main(["demo"]) == 0, capsys.readouterr()
    assert "All 6 steps behaved as expected" in capsys.readouterr().out


def _run(
    command: list[str], *, timeout: float, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` in a clean environment; fail the test with its output unless it exits 0."""
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=_clean_environment(),
        cwd=cwd,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.mark.slow
def test_demo_runs_from_a_wheel_installed_in_a_fresh_venv(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(root)],
        timeout=300,
    )
    (wheel,) = tmp_path.glob("ccflow_oauth-*.whl")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], timeout=120)
    python = venv / "bin" / "python"
    _run(
        [str(python), "-m", "pip", "install", "-q", f"ccflow-oauth[server] @ {wheel.as_uri()}"],
        timeout=300,
    )
    elsewhere = _booby_trapped(tmp_path / "elsewhere")
    where = _run(
        [
            str(python),
            "-c",
            "import ccflow, importlib.metadata as m; "
            "print(ccflow.__file__); print(m.version('ccflow-oauth'), ccflow.__version__)",
        ],
        cwd=elsewhere,
        timeout=60,
    ).stdout.split()
    assert Path(where[0]).is_relative_to(venv)
    assert where[1] == where[2]
    demo = _run([str(venv / "bin" / "ccflow"), "demo"], cwd=elsewhere, timeout=120)
    assert "All 6 steps behaved as expected" in demo.stdout
    assert "BOOBY TRAP" not in demo.stdout + demo.stderr
