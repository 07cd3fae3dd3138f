"""decide() on synthetic timelines: steady, 2x step, spike, slow decay, flapping, min/max, zero, manual."""

from __future__ import annotations

import itertools

import pytest

from faasd.errors import InvalidRequest
from faasd.scaler.decide import Decision, ScalerState, Window, decide
from faasd.scaler.settings import ScaleSettings

CAPACITY = ScaleSettings(target=10, target_proportion=1.0)  # one replica per 10 calls in flight
RPS = ScaleSettings(type="rps", target=50, target_proportion=1.0)


def window(concurrency: list[float], idle: float = 0.0, requests: list[float] | None = None) -> Window:
    return Window(
        requests=requests if requests is not None else [c * 10 for c in concurrency],
        concurrency=concurrency,
        idle_s=idle,
    )


def run(
    timeline: list[float], settings: ScaleSettings = CAPACITY, replicas: int = 1, start: float = 0.0, tick: int = 2
) -> list[Decision]:
    """Feed a per-second concurrency timeline; decide every ``tick`` seconds; replicas follow the
    decision and are ready at once."""
    decisions = []
    state = ScalerState()
    for second in range(tick, len(timeline) + 1, tick):
        decision = decide(
            window(timeline[:second]), settings, replicas=replicas, ready=replicas, now=start + second, state=state
        )
        decisions.append(decision)
        state, replicas = decision.state, decision.desired
    return decisions


def test_steady_load_holds_the_count():
    decisions = run([25.0] * 120, replicas=3)
    assert {d.desired for d in decisions} == {3}
    assert not any(d.panicking for d in decisions)


def test_step_to_twice_capacity_panics_and_scales_within_one_tick():
    timeline = [10.0] * 60 + [20.0] * 10
    decisions = run(timeline, replicas=1)
    before, after = decisions[:30], decisions[30:]
    assert {d.desired for d in before} == {1}
    assert after[0].desired == 2 and after[0].panicking  # first tick after the step
    assert "panic" in after[0].reason


@pytest.mark.parametrize(("idle_seconds", "panics", "after_20s"), [(4, False, 12), (12, True, 14)])
def test_a_burst_on_a_function_younger_than_the_panic_window_may_scale_without_panic(idle_seconds, panics, after_20s):
    # Each window averages the samples the function has. Four idle seconds, then 24 in flight at 2
    # replicas: both windows average nearly the same samples, the stable want grows about as fast as the
    # panic want, the replicas (ready at once) keep up, and the panic window never asks for twice the
    # ready ones -- the stable window scales it, tick by tick, as for any load under 2x its capacity.
    # Twelve idle seconds first: the stable window lags and the burst is a panic at 2 replicas.
    timeline = [0.0] * idle_seconds + [24.0] * 20
    decisions = run(timeline, settings=ScaleSettings(target=2, min_replicas=2), replicas=2, tick=1)
    assert any(d.panicking for d in decisions) is panics
    assert decisions[-1].desired == after_20s  # ceil(24 / 1.8) = 14 once the stable window has caught up


def test_spike_scales_up_at_once_and_does_not_flap_down_during_panic():
    timeline = [5.0] * 30 + [80.0] * 4 + [5.0] * 40
    decisions = run(timeline, replicas=1)
    peak = max(d.desired for d in decisions)
    assert peak == 6  # the 6 s panic window averages the 4 s spike: (2 * 5 + 4 * 80) / 6 = 55 in flight
    spike_end = 34 // 2
    # While panicking (one stable window after the last trigger) the count never goes down.
    panicking = [d.desired for d in decisions[spike_end:] if d.panicking]
    assert panicking and panicking == sorted(panicking)
    assert decisions[-1].desired < peak or decisions[-1].panicking


def test_slow_decay_scales_down_by_at_most_half_per_tick():
    timeline = [80.0] * 60 + [0.0] * 200
    decisions = run(timeline, replicas=8)
    counts = [d.desired for d in decisions]
    for previous, current in itertools.pairwise(counts):
        assert current >= -(-previous // 2)  # ceil(previous / 2)
    assert counts[-1] == 1  # min 1, zero not enabled


def test_flapping_input_inside_the_stable_window_does_not_thrash():
    timeline = [12.0, 8.0] * 60  # hovering around one replica's capacity
    decisions = run(timeline, replicas=2)
    changes = sum(1 for a, b in itertools.pairwise(decisions) if a.desired != b.desired)
    assert changes <= 2


def test_min_and_max_bound_the_decision():
    settings = ScaleSettings(min_replicas=2, max_replicas=4, target=10, target_proportion=1.0)
    assert decide(window([0.0] * 60), settings, replicas=2, ready=2, now=60).desired == 2
    assert decide(window([500.0] * 60), settings, replicas=2, ready=2, now=60).desired == 4


def test_min_equal_max_turns_autoscaling_off():
    settings = ScaleSettings(min_replicas=3, max_replicas=3)
    decision = decide(window([500.0] * 60), settings, replicas=3, ready=3, now=60)
    assert decision.desired == 3 and "off" in decision.reason


def test_scale_to_zero_after_the_idle_duration_only_when_enabled():
    zero = ScaleSettings(zero=True, zero_duration_s=30)
    assert decide(window([0.0] * 60, idle=29), zero, replicas=1, ready=1, now=60).desired == 1
    decision = decide(window([0.0] * 60, idle=30), zero, replicas=1, ready=1, now=60)
    assert decision.desired == 0 and "zero" in decision.reason
    assert decide(window([0.0] * 60, idle=3600), CAPACITY, replicas=1, ready=1, now=60).desired == 1


def test_at_zero_stays_at_zero_until_a_call_wakes_it():
    decision = decide(window([0.0] * 60, idle=10), CAPACITY, replicas=0, ready=0, now=60)
    assert decision.desired == 0 and "scale from zero" in decision.reason


def test_manual_scale_is_a_floor_for_one_stable_window_then_load_decides():
    state = ScalerState(manual_floor=5, manual_until=100.0)
    kept = decide(window([0.0] * 60), CAPACITY, replicas=5, ready=5, now=90, state=state)
    assert kept.desired == 5 and "manual" in kept.reason
    later = decide(window([0.0] * 60), CAPACITY, replicas=5, ready=5, now=101, state=kept.state)
    assert later.desired == 3  # halving towards the load-based 1
    # A panic still scales above a manual floor at once.
    panic = decide(
        window([10.0] * 54 + [90.0] * 6),
        CAPACITY,
        replicas=2,
        ready=2,
        now=90,
        state=ScalerState(manual_floor=2, manual_until=100.0),
    )
    assert panic.desired == 9


def test_rps_mode_uses_calls_per_second():
    decision = decide(window([0.0] * 60, requests=[120.0] * 60), RPS, replicas=1, ready=1, now=60)
    assert decision.desired == 3 and "rps" in decision.reason


def test_target_proportion_scales_before_the_target_is_reached():
    settings = ScaleSettings(target=10, target_proportion=0.5)
    assert decide(window([6.0] * 60), settings, replicas=1, ready=1, now=60).desired == 2


def test_panic_ends_after_a_stable_window_without_trigger():
    state = ScalerState(panic_since=0.0, panic_last_trigger=10.0)
    still = decide(window([1.0] * 60), CAPACITY, replicas=4, ready=4, now=69, state=state)
    assert still.panicking and still.desired == 4
    over = decide(window([1.0] * 60), CAPACITY, replicas=4, ready=4, now=70, state=state)
    assert not over.panicking and over.desired == 2 and "panic over" in over.reason


def test_replicas_not_ready_yet_do_not_retrigger_growth():
    # Scaled to 4 a moment ago, 1 ready: panic holds 4, it does not keep adding.
    state = ScalerState(panic_since=50.0, panic_last_trigger=50.0)
    decision = decide(window([10.0] * 54 + [40.0] * 6), CAPACITY, replicas=4, ready=1, now=52, state=state)
    assert decision.desired == 4


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({"com.openfaas.scale.min": "x"}, "scale.min"),
        ({"com.openfaas.scale.min": "5", "com.openfaas.scale.max": "2"}, "above"),
        ({"com.openfaas.scale.type": "cpu"}, "scale.type"),
        ({"com.openfaas.scale.target": "0"}, "scale.target"),
        ({"com.openfaas.scale.target-proportion": "1.5"}, "target-proportion"),
        ({"com.openfaas.scale.zero": "maybe"}, "scale.zero"),
        ({"com.openfaas.scale.zero-duration": "soon"}, "zero-duration"),
    ],
)
def test_bad_labels_are_deploy_errors(labels, message):
    with pytest.raises(InvalidRequest, match=message):
        ScaleSettings.from_labels(labels)


def test_labels_are_read():
    settings = ScaleSettings.from_labels(
        {
            "com.openfaas.scale.min": "2",
            "com.openfaas.scale.max": "8",
            "com.openfaas.scale.type": "rps",
            "com.openfaas.scale.target": "20",
            "com.openfaas.scale.target-proportion": "0.5",
            "com.openfaas.scale.zero": "true",
            "com.openfaas.scale.zero-duration": "2m",
        }
    )
    assert (settings.min_replicas, settings.max_replicas, settings.type) == (2, 8, "rps")
    assert settings.per_replica == 10 and settings.zero and settings.zero_duration_s == 120
    assert ScaleSettings.from_labels({}).type == "capacity" and ScaleSettings.from_labels({}).target == 10


def test_queued_async_work_adds_to_the_load_of_both_windows():
    calm = Window(requests=[0.0] * 60, concurrency=[5.0] * 60, idle_s=0.0)
    assert decide(calm, CAPACITY, replicas=1, ready=1, now=60).desired == 1
    backlog = Window(requests=[0.0] * 60, concurrency=[5.0] * 60, idle_s=0.0, queued=25.0)
    decision = decide(backlog, CAPACITY, replicas=1, ready=1, now=60)
    assert (decision.stable_load, decision.panic_load) == (30.0, 30.0)
    assert decision.desired == 3  # ceil(30 / 10): a backlog is load before it reaches a replica
