"""``bench/load.py`` in a reduced size: every request gets its documented status, no 5xx, and
nothing is left running (the full size runs from ``bench/``)."""

from __future__ import annotations

import importlib.util
import socket
import sys
import threading
from pathlib import Path
from types import ModuleType

import pytest

LOAD = Path(__file__).resolve().parents[2] / "bench" / "load.py"


def load_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ccflow_bench_load", LOAD)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_reduced_load_passes_and_leaves_nothing_running(
    capsys: pytest.CaptureFixture[str],
) -> None:
    load = load_module()
    before = set(threading.enumerate())
    assert load.main(["--requests", "600", "--concurrency", "16"]) == 0
    out = capsys.readouterr().out
    assert "VERDICT: PASS" in out
    assert "with RequireRole: 600 requests" in out
    for kind, status in load.EXPECTED.items():
        assert f"{kind:<15} {status}" in out
    assert set(threading.enumerate()) <= before


def test_a_wrong_status_fails_the_verdict(capsys: pytest.CaptureFixture[str]) -> None:
    load = load_module()
    load.EXPECTED = {**load.EXPECTED, "no-token": 200}  # pretend the API should let it through
    assert load.main(["--requests", "40", "--concurrency", "4"]) == 1
    assert "VERDICT: FAIL" in capsys.readouterr().out


def test_server_binds_loopback_and_stops() -> None:
    load = load_module()
    with load.Server(load.baseline_app()) as server:
        port = server.port
        assert server.url.startswith("http://127.0.0.1:")
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        sock.connect(("127.0.0.1", port))
