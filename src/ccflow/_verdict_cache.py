"""The verified-token cache of :class:`ccflow.TokenValidator`.

At most ``size`` verdicts, keyed by a SHA-256 of the token, in least-recently-used order (a
bounded ``OrderedDict``). An entry is served only while its token is unexpired (``exp``, by
the validator's clock) and the key that verified it is still published; otherwise it is
dropped and the token is verified afresh. One lock: ``validate_sync`` runs in threads.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from ccflow._core.claims import ValidatedToken

__all__ = ["VerdictCache"]


@dataclass(frozen=True, slots=True)
class _Entry:
    """A verdict and the ``kid`` of the key that verified its token."""

    verdict: ValidatedToken
    kid: str


class VerdictCache:
    """Verdicts by token digest: bounded, each until its token's ``exp`` (``size`` 0: none)."""

    def __init__(self, size: int, clock: Callable[[], float]) -> None:
        self._size = size
        self._clock = clock
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, digest: bytes, published: Callable[[str], bool]) -> ValidatedToken | None:
        """The verdict under ``digest`` while its token is unexpired and ``published(kid)``
        says its key is still in the JWKS; ``None`` (and the entry dropped) otherwise."""
        now = self._clock()
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return None
            if entry.verdict.expires_on <= now or not published(entry.kid):
                del self._entries[digest]  # expired, or its key left the JWKS: verify afresh
                return None
            self._entries.move_to_end(digest)
            return entry.verdict

    def put(self, digest: bytes, verdict: ValidatedToken, kid: str) -> None:
        """Keep ``verdict`` under ``digest``, dropping the least recently used beyond the bound;
        a token past its ``exp`` (valid within the leeway) is not kept, and evicts nothing."""
        if not self._size or verdict.expires_on <= self._clock():
            return
        with self._lock:
            self._entries[digest] = _Entry(verdict, kid)
            self._entries.move_to_end(digest)
            if len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        """How many verdicts are held now."""
        with self._lock:
            return len(self._entries)
