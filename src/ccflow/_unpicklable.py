"""Objects that hold a secret (a credential, a client) refuse to be pickled: a pickle would
carry the secret to a file or another process."""

from __future__ import annotations

from typing import ClassVar, NoReturn, SupportsIndex

__all__ = ["Unpicklable"]


class Unpicklable:
    """A base whose instances ``pickle`` (and ``copy``) refuse with a ``TypeError`` that
    names the class and says why (``_WHY_UNPICKLABLE``) and what to do instead."""

    __slots__ = ()

    _WHY_UNPICKLABLE: ClassVar[str] = (
        "holds a secret and cannot be pickled; build it again from configuration in the other "
        "process"
    )

    def __reduce_ex__(self, protocol: SupportsIndex) -> NoReturn:
        raise TypeError(f"{type(self).__name__} {self._WHY_UNPICKLABLE}")
