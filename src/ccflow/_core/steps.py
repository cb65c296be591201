"""Advancing a sans-IO generator by one step, for the faces that drive one.

The core's flows (:func:`ccflow._core.flow.fetch_flow`, :func:`ccflow._core.shared_cache.fill_flow`,
the JWKS refresh in :mod:`ccflow.jwks`) yield steps and receive replies. Each face, sync or
async, is the same short loop; only how it performs a step differs (``await`` or not)::

    reply = None
    while not isinstance(step := advance(flow, reply), Done):
        reply = perform(step)            # or: reply = await perform(step)
    return step.value
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["Done", "advance"]

StepT = TypeVar("StepT")
ReplyT = TypeVar("ReplyT")
ResultT = TypeVar("ResultT")


@dataclass(frozen=True, slots=True)
class Done(Generic[ResultT]):
    """The flow has finished: ``value`` is what it returned."""

    value: ResultT


def advance(flow: Generator[StepT, ReplyT, ResultT], reply: ReplyT) -> StepT | Done[ResultT]:
    """Send ``reply`` into ``flow`` (``None`` to start it): its next step, or :class:`Done`."""
    try:
        return flow.send(reply)
    except StopIteration as stop:
        return Done(stop.value)
