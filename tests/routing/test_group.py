"""Balancing, cooldown and backoff, unit by unit."""

from __future__ import annotations

import random
from typing import Any

import pytest

from chatgate.errors import UpstreamError
from chatgate.routing.group import Deployment, ModelGroup
from chatgate.routing.retry import MAX_RETRY_AFTER, backoff


def group(weights: list[float], **kwargs: Any) -> ModelGroup:
    deployments = [Deployment(backend=object(), label=f"d{i}", weight=w) for i, w in enumerate(weights)]  # type: ignore[arg-type]
    return ModelGroup(name="g", deployments=deployments, rng=random.Random(7), **kwargs)


def test_weighted_picks_follow_the_weights() -> None:
    g = group([3, 1])
    picks = [g.pick().label for _ in range(4000)]
    assert 0.70 < picks.count("d0") / 4000 < 0.80


def test_least_busy_picks_the_fewest_in_flight() -> None:
    g = group([1, 1, 1], balancing="least_busy")
    g.deployments[0].in_flight = 2
    g.deployments[1].in_flight = 0
    g.deployments[2].in_flight = 1
    assert {g.pick().label for _ in range(50)} == {"d1"}


def test_a_deployment_cools_down_after_allowed_fails_and_recovers_on_success() -> None:
    g = group([1, 1], allowed_fails=2, cooldown_seconds=60)
    bad = g.deployments[0]
    g.failed(bad)
    g.failed(bad)
    assert {g.pick().label for _ in range(50)} == {"d1"}
    g.succeeded(bad)
    assert "d0" in {g.pick().label for _ in range(50)}


def test_when_every_deployment_cools_down_they_are_still_used() -> None:
    g = group([1], allowed_fails=1)
    g.failed(g.deployments[0])
    assert g.pick().label == "d0"


def test_excluded_deployments_are_avoided_when_others_exist() -> None:
    g = group([1, 1])
    assert {g.pick(exclude={g.deployments[0]}).label for _ in range(20)} == {"d1"}


def test_backoff_grows_with_jitter_and_honours_retry_after() -> None:
    rng = random.Random(1)
    waits = [backoff(a, None, 0.5, rng) for a in range(5)]
    assert all(w is not None for w in waits)
    assert 0.5 <= waits[0] <= 0.625 and 1.0 <= waits[1] <= 1.25 and 8.0 <= waits[4] <= 10.0  # type: ignore[operator]
    assert backoff(0, 2.5, 0.5, rng) == 2.5
    assert backoff(0, MAX_RETRY_AFTER + 1, 0.5, rng) is None


def test_rpm_capacity_makes_a_deployment_unavailable_for_a_minute() -> None:
    g = group([1, 1])
    g.deployments[0].rpm = 2
    g.deployments[1].rpm = 1
    for _ in range(3):
        g.pick()
    with pytest.raises(UpstreamError) as err:
        g.pick()
    assert err.value.status == 429 and err.value.retryable
    assert err.value.retry_after is not None and 0 < err.value.retry_after <= 60


def test_tpm_capacity_counts_the_tokens_of_finished_requests() -> None:
    g = group([1])
    only = g.deployments[0]
    only.tpm = 100
    g.pick()
    only.record_tokens(120)
    with pytest.raises(UpstreamError):
        g.pick()
