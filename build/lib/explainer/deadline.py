"""A time budget for one answer: slow work is refused up front or stopped between batches, never left to run on.

A public server gives each turn a budget (:func:`time_budget`); library and CLI users set none and nothing changes
for them. The engine calls :func:`check` between forward batches (Score-CAM's masked inputs, the trust check's
occlusions, deletion curves) and :func:`expect` before work whose cost it can estimate, so a 25-second Score-CAM on
a large uploaded model is refused in milliseconds instead of holding a worker that other visitors wait for.
A budget may also carry a ``cancelled`` test (the visitor has gone): the work then stops at the next check.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from explainer.errors import ExplainerError


class TimeBudgetExceeded(ExplainerError):
    """The answer would take (or has taken) longer than the server allows one turn."""


class Cancelled(ExplainerError):
    """The visitor who asked has gone; the work was stopped."""


@dataclass(frozen=True)
class _Budget:
    ends: float  # time.monotonic() deadline
    seconds: float
    cancelled: Callable[[], bool] | None


_current: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("explainer_time_budget", default=None)


@contextlib.contextmanager
def time_budget(seconds: float | None, cancelled: Callable[[], bool] | None = None) -> Iterator[None]:
    """Within this block, :func:`check` and :func:`expect` enforce ``seconds`` (None or inf: no limit)."""
    if seconds is None or math.isinf(seconds):
        seconds = math.inf
    token = _current.set(_Budget(time.monotonic() + seconds, seconds, cancelled))
    try:
        yield
    finally:
        _current.reset(token)


def remaining() -> float:
    """Seconds left in the current budget (infinite when there is none)."""
    budget = _current.get()
    return math.inf if budget is None else budget.ends - time.monotonic()


def check() -> None:
    """Stop here if the visitor has gone or the budget is spent (between batches of slow work)."""
    budget = _current.get()
    if budget is None:
        return
    if budget.cancelled is not None and budget.cancelled():
        raise Cancelled("The request was cancelled.")
    if time.monotonic() > budget.ends:
        raise TimeBudgetExceeded(
            f"This answer took longer than the {budget.seconds:g} seconds this server allows one question, so it "
            "was stopped. Grad-CAM (say \"use gradcam\") answers the same question in one pass of the model."
        )


def expect(seconds: float, what: str) -> None:
    """Refuse ``what`` up front when its estimated ``seconds`` exceed what is left of the budget."""
    budget = _current.get()
    if budget is None or seconds <= budget.ends - time.monotonic():
        return
    raise TimeBudgetExceeded(
        f"{what} would take about {_seconds(seconds)} on this model, more than the {budget.seconds:g} "
        "seconds this server allows one question. Grad-CAM (say \"use gradcam\") needs a single pass of the model."
    )


def _seconds(value: float) -> str:
    whole = max(1, math.ceil(value))
    return f"{whole} second" if whole == 1 else f"{whole} seconds"
