"""The time budget of one answer: slow work refused up front, stopped between batches, or cancelled."""

from __future__ import annotations

import numpy as np
import pytest

from explainer import deadline, explain, load_model
from explainer.engine import forward_seconds, warm_up


@pytest.fixture(scope="module")
def model():
    loaded = load_model("shapes")
    warm_up(loaded)
    return loaded


@pytest.fixture
def image():
    return np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)


def test_warm_up_measures_one_forward_pass(model):
    assert 0 < forward_seconds(model) < 5


def test_without_a_budget_nothing_changes(model, image):
    assert deadline.remaining() == float("inf")
    assert explain(model, image, method="scorecam").heatmap.max() > 0


def test_score_cam_is_refused_up_front_when_its_estimate_exceeds_the_budget(model, image):
    calls = []
    with (deadline.time_budget(0.01, cancelled=lambda: calls.append(1) or False),
          pytest.raises(deadline.TimeBudgetExceeded, match="Score-CAM would take about")):
        explain(model, image, method="scorecam")
    assert calls == []  # refused before any masked forward pass ran
    with deadline.time_budget(0.01):  # one pass, no estimate needed
        assert explain(model, image, method="gradcam").heatmap.max() > 0


def test_work_over_the_budget_stops_between_batches(model, image, monkeypatch):
    monkeypatch.setitem(model._compiled, "forward_seconds", 0.0)  # no estimate: only the checks can stop it
    checks = []
    real = deadline.check
    monkeypatch.setattr(deadline, "check", lambda: (checks.append(1), real())[1])
    with deadline.time_budget(0.0), pytest.raises(deadline.TimeBudgetExceeded, match="was stopped"):
        explain(model, image, method="scorecam")
    assert len(checks) == 1  # stopped at the first batch boundary, not after all of them


def test_work_stops_when_the_visitor_has_gone(model, image):
    with deadline.time_budget(60, cancelled=lambda: True), pytest.raises(deadline.Cancelled):
        explain(model, image, method="scorecam")
