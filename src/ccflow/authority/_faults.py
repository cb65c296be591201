"""Fault knobs: make an endpoint fail on purpose, switchable at run time."""

from __future__ import annotations

import threading
from dataclasses import dataclass

__all__ = ["ENDPOINTS", "Fault", "FaultBoard"]

ENDPOINTS = ("token", "jwks", "discovery", "imds", "app_service")


@dataclass(frozen=True, slots=True)
class Fault:
    """How an endpoint misbehaves, for ``Authority.set_fault(endpoint, fault)``.

    - ``status``: answer with this status (429, 503, ...); the body is Azure AD's error JSON
      unless ``body`` is given.
    - ``retry_after``: a ``Retry-After`` header value (``"2"`` or an HTTP date), or ``None``.
    - ``body``: raw bytes to answer with (garbage, HTML); status 200 unless ``status`` is set.
    - ``drop``: in-process, raise ``httpx.ConnectError``; on the real server, close the
      connection without an answer.
    - ``timeout``: in-process, raise ``httpx.ReadTimeout``; on the real server, answer only after
      ``delay`` seconds (30 when ``delay`` is 0), which a client with a shorter timeout sees as one.
    - ``delay``: seconds to wait before answering (real server only; in-process code never
      sleeps).
    - ``times``: how many requests the fault affects; ``None`` until ``clear_fault``.

    Example: ``authority.set_fault("token", Fault(status=503, retry_after="1", times=2))``.
    """

    status: int | None = None
    retry_after: str | None = None
    body: bytes | None = None
    drop: bool = False
    timeout: bool = False
    delay: float = 0.0
    times: int | None = None

    def __post_init__(self) -> None:
        if self.status is not None and not 100 <= self.status <= 599:
            raise ValueError(f"Fault.status must be an HTTP status, got {self.status!r}")
        if self.delay < 0:
            raise ValueError(f"Fault.delay must be >= 0, got {self.delay!r}")
        if self.times is not None and self.times < 1:
            raise ValueError(f"Fault.times must be >= 1 or None, got {self.times!r}")

    @property
    def answers(self) -> bool:
        """True when the fault replaces the normal answer (status or body)."""
        return self.status is not None or self.body is not None


class FaultBoard:
    """The faults currently set, per endpoint; thread-safe (the real server is threaded)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: dict[str, tuple[Fault, int | None]] = {}

    def set(self, endpoint: str, fault: Fault) -> None:
        """Set (or replace) the fault of ``endpoint``."""
        _check(endpoint)
        if not isinstance(fault, Fault):
            raise TypeError(f"expected a Fault, got {type(fault).__name__}")
        with self._lock:
            self._faults[endpoint] = (fault, fault.times)

    def clear(self, endpoint: str | None = None) -> None:
        """Clear the fault of ``endpoint``, or every fault."""
        with self._lock:
            if endpoint is None:
                self._faults.clear()
            else:
                _check(endpoint)
                self._faults.pop(endpoint, None)

    def take(self, endpoint: str) -> Fault | None:
        """The fault that applies to one request to ``endpoint`` (counting it against ``times``);
        ``None`` for an endpoint without one, including any name :meth:`set` refuses."""
        with self._lock:
            entry = self._faults.get(endpoint)
            if entry is None:
                return None
            fault, remaining = entry
            if remaining is not None:
                if remaining <= 1:
                    del self._faults[endpoint]
                else:
                    self._faults[endpoint] = (fault, remaining - 1)
            return fault


def _check(endpoint: str) -> None:
    """Refuse an endpoint name that faults cannot apply to."""
    if endpoint not in ENDPOINTS:
        raise ValueError(f"unknown endpoint {endpoint!r}; faults apply to {list(ENDPOINTS)}")
