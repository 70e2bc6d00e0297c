"""The HorizontalPodAutoscaler's arithmetic fed with metrics (controllers/hpascale.py), on the
cases of upstream's replica_calculator_test.go and horizontal_test.go: the figures expected are
upstream's, computed by hand from its formulas where a case is ours."""

from __future__ import annotations

import pytest

from hypernetes.controllers.hpascale import (
    MetricsUnavailable,
    PodInfo,
    PodUsage,
    Recommender,
    _Event,
    resource_replicas,
)

NOW = 10_000.0
LONG_AGO = NOW - 3600  # pods started well before the CPU initialization period


def pods(
    n: int, request: int = 1000, ready: list[bool] | None = None, started: float = LONG_AGO
) -> list[PodInfo]:
    flags = ready or [True] * n
    return [
        PodInfo(
            f"pod-{i}",
            ready=flags[i],
            ready_since=started + 10,
            started=started,
            requests={"cpu": request},
        )
        for i in range(n)
    ]


def usage(*millis: int) -> dict[str, PodUsage]:
    return {f"pod-{i}": PodUsage(v, NOW - 1, 15.0) for i, v in enumerate(millis)}


def test_scale_up() -> None:
    # upstream TestReplicaCalcScaleUp: 300m, 500m, 700m of 1 CPU each, target 30%
    got = resource_replicas(3, pods(3), usage(300, 500, 700), "cpu", 30, True, NOW)
    assert (got.count, got.utilization) == (5, 50)


def test_scale_up_with_an_unready_pod_counts_it_idle() -> None:
    # upstream TestReplicaCalcScaleUpUnreadyLessScale: the unready pod's CPU is left out of the
    # ratio (60%), then counted as 0 for the count: 1200m of 3 CPU = 40% / 30% -> 4
    started = NOW - 60  # within the CPU initialization period
    got = resource_replicas(
        3, pods(3, ready=[False, True, True], started=started), usage(300, 500, 700), "cpu", 30, True, NOW
    )
    assert (got.count, got.utilization) == (4, 60)


def test_scale_down() -> None:
    # upstream TestReplicaCalcScaleDown: 28% of a 50% target over 5 pods -> 3
    got = resource_replicas(5, pods(5), usage(100, 300, 500, 250, 250), "cpu", 50, True, NOW)
    assert (got.count, got.utilization) == (3, 28)


def test_within_tolerance_keeps_the_count() -> None:
    # upstream TestReplicaCalcTolerance: 102% of a 100% target is within 0.1
    p = [
        PodInfo(f"pod-{i}", ready_since=LONG_AGO, started=LONG_AGO, requests={"cpu": r})
        for i, r in enumerate((900, 1000, 1100))
    ]
    got = resource_replicas(3, p, usage(1010, 1030, 1020), "cpu", 100, True, NOW)
    assert (got.count, got.utilization) == (3, 102)


def test_missing_metrics_count_at_their_request_when_scaling_down() -> None:
    # 300m of 3 CPU measured (10%, target 50%); the pod without metrics is taken at its request:
    # 1300m of 4 CPU = 32.5% -> 0.65 * 4 -> 3 (not the 1 the measured pods alone would give)
    got = resource_replicas(4, pods(4), usage(100, 100, 100), "cpu", 50, True, NOW)
    assert (got.count, got.utilization) == (3, 10)


def test_missing_metrics_count_idle_when_scaling_up() -> None:
    # 1800m of 2 CPU measured (90%, target 50%); the third pod idle: 60% -> 1.2 * 3 -> 4
    got = resource_replicas(3, pods(3), usage(900, 900), "cpu", 50, True, NOW)
    assert (got.count, got.utilization) == (4, 90)


def test_missing_metrics_that_flip_the_direction_keep_the_count() -> None:
    # 550m of 1 CPU (55%, target 50%): up, but with the missing pod idle it is 27.5%: no change
    got = resource_replicas(2, pods(2), usage(550), "cpu", 50, True, NOW)
    assert got.count == 2


def test_average_value_target() -> None:
    # AverageValue: 500m per pod against 250m -> twice the pods
    got = resource_replicas(3, pods(3), usage(500, 500, 500), "cpu", 250, False, NOW)
    assert (got.count, got.utilization, got.average) == (6, None, 500)


def test_memory_ignores_readiness() -> None:
    # memory: an unready pod's usage counts (upstream only discounts CPU)
    p = [
        PodInfo(f"pod-{i}", ready=r, ready_since=NOW - 5, started=NOW - 10, requests={"memory": 1000 * 2**20})
        for i, r in enumerate((False, True))
    ]
    got = resource_replicas(2, p, usage(900 * 2**20, 900 * 2**20), "memory", 45, True, NOW)
    assert got.count == 4


def test_deleted_and_failed_pods_are_ignored() -> None:
    p = [
        *pods(2),
        PodInfo("gone", deleting=True, requests={"cpu": 1000}),
        PodInfo("dead", phase="Failed", requests={"cpu": 1000}),
    ]
    m = {**usage(800, 800), "gone": PodUsage(0, NOW, 15), "dead": PodUsage(0, NOW, 15)}
    got = resource_replicas(2, p, m, "cpu", 40, True, NOW)
    assert (got.count, got.utilization) == (4, 80)


def test_missing_request_is_an_error() -> None:
    p = [PodInfo("pod-0", missing_requests={"cpu": "web"}, started=LONG_AGO, ready_since=LONG_AGO)]
    with pytest.raises(MetricsUnavailable, match="missing request for cpu"):
        resource_replicas(1, p, usage(100), "cpu", 50, True, NOW)


def test_no_metrics_is_an_error() -> None:
    with pytest.raises(MetricsUnavailable):
        resource_replicas(2, pods(2), {}, "cpu", 50, True, NOW)


# -- from the metrics' count to the target's (horizontal.go) -------------------------------------

DEFAULT_BEHAVIOR: dict[str, object] = {}  # a behavior given empty: upstream's defaults fill it


def test_without_behavior_scale_up_is_at_most_double_or_four() -> None:
    got = Recommender().normalize(None, 2, 10, 1, 20, NOW)
    assert (got.replicas, got.limited, got.limit_reason) == (4, True, "ScaleUpLimit")
    got = Recommender().normalize(None, 3, 10, 1, 5, NOW)
    assert (got.replicas, got.limit_reason) == (5, "TooManyReplicas")


def test_without_behavior_scale_down_waits_for_the_window() -> None:
    r = Recommender()
    assert r.normalize(None, 5, 5, 1, 10, NOW - 100).replicas == 5
    got = r.normalize(None, 5, 2, 1, 10, NOW)
    assert (got.replicas, got.able_reason) == (5, "ScaleDownStabilized")
    # once the higher recommendation is older than 300 s, the lower one applies
    assert r.normalize(None, 5, 2, 1, 10, NOW + 301).replicas == 2


def test_min_replicas() -> None:
    got = Recommender().normalize(None, 3, 0, 2, 10, NOW)
    assert (got.replicas, got.limit_reason) == (2, "TooFewReplicas")


def test_default_behavior_scale_up_takes_the_larger_policy() -> None:
    # Pods 4 / Percent 100 per 15 s, select Max: from 1, +4 beats x2 -> 5; from 10, x2 -> 20
    assert Recommender().normalize(DEFAULT_BEHAVIOR, 1, 50, 1, 100, NOW).replicas == 5
    got = Recommender().normalize(DEFAULT_BEHAVIOR, 10, 50, 1, 100, NOW)
    assert (got.replicas, got.limit_reason) == (20, "ScaleUpLimit")


def test_select_min_takes_the_smaller_policy() -> None:
    behavior = {"scaleUp": {"selectPolicy": "Min"}}
    assert Recommender().normalize(behavior, 10, 50, 1, 100, NOW).replicas == 14


def test_disabled_scale_up() -> None:
    behavior = {"scaleUp": {"selectPolicy": "Disabled"}}
    got = Recommender().normalize(behavior, 3, 9, 1, 100, NOW)
    assert (got.replicas, got.limited) == (3, True)


def test_recent_scale_ups_count_against_the_period() -> None:
    # 4 pods were added 5 s ago: the period began at 1, the Pods policy allows 5, Percent 2
    r = Recommender(up_events=[_Event(4, NOW - 5)])
    assert (
        r.normalize(
            {"scaleUp": {"policies": [{"type": "Pods", "value": 4, "periodSeconds": 15}]}}, 5, 20, 1, 100, NOW
        ).replicas
        == 5
    )
    # once they are older than the period, 4 more may come
    r = Recommender(up_events=[_Event(4, NOW - 20)])
    assert (
        r.normalize(
            {"scaleUp": {"policies": [{"type": "Pods", "value": 4, "periodSeconds": 15}]}}, 5, 20, 1, 100, NOW
        ).replicas
        == 9
    )


def test_scale_down_policy_and_window() -> None:
    behavior = {
        "scaleDown": {
            "stabilizationWindowSeconds": 0,
            "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
        }
    }
    r = Recommender()
    got = r.normalize(behavior, 5, 1, 1, 10, NOW)
    assert (got.replicas, got.limit_reason) == (4, "ScaleDownLimit")
    r.record_scale(behavior, 5, 4, NOW)
    got = r.normalize(behavior, 4, 1, 1, 10, NOW + 10)
    assert got.replicas == 4  # one pod per minute: the next one waits
    assert r.normalize(behavior, 4, 1, 1, 10, NOW + 61).replicas == 3


def test_scale_down_stabilization_with_behavior_defaults_to_300_s() -> None:
    r = Recommender()
    r.normalize(DEFAULT_BEHAVIOR, 6, 6, 1, 10, NOW - 200)
    got = r.normalize(DEFAULT_BEHAVIOR, 6, 2, 1, 10, NOW)
    assert (got.replicas, got.able_reason) == (6, "ScaleDownStabilized")


def test_scale_up_stabilization_window() -> None:
    behavior = {"scaleUp": {"stabilizationWindowSeconds": 60}}
    r = Recommender()
    r.normalize(behavior, 2, 2, 1, 10, NOW - 30)
    got = r.normalize(behavior, 2, 8, 1, 10, NOW)
    assert (got.replicas, got.able_reason) == (2, "ScaleUpStabilized")
