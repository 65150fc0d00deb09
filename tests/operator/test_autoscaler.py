"""The pure replica decision, driven with virtual time (no sleeping)."""

from __future__ import annotations

from gearshift_operator.autoscaler import (
    Policy,
    ScaleState,
    decide,
    demand_pending,
    needs_write,
    state_from_status,
    state_to_status,
)

POLICY = Policy(min_replicas=1, max_replicas=8, target=5.0, stabilization_s=300.0)


def test_rising_load_scales_up_with_a_rate_cap() -> None:
    state = ScaleState()
    replicas = 1
    seen = []
    for t in range(0, 120, 15):
        replicas = decide(POLICY, replicas, 40.0, float(t), state).replicas
        seen.append(replicas)
    # 40 waiting / target 5 = 8, reached by doubling, never jumping straight there.
    assert seen[:4] == [2, 4, 8, 8]
    assert max(seen) == POLICY.max_replicas


def test_falling_load_scales_down_only_after_stabilization() -> None:
    state = ScaleState()
    replicas = 4
    t = 0.0
    assert decide(POLICY, replicas, 20.0, t, state).replicas == 4  # steady at target
    history = []
    while t < 600:
        t += 15
        decision = decide(POLICY, replicas, 2.0, t, state)
        replicas = decision.replicas
        history.append((t, replicas))
    first_down = next(ts for ts, n in history if n < 4)
    assert first_down >= 300  # not before the window has passed
    assert replicas == 1


def test_short_dip_inside_the_window_never_flaps() -> None:
    state = ScaleState()
    replicas = 4
    loads = [20.0, 20.0, 0.0, 0.0, 20.0, 20.0, 0.0, 20.0] * 5
    changes = 0
    for i, load in enumerate(loads):
        n = decide(POLICY, replicas, load, i * 15.0, state).replicas
        changes += n != replicas
        replicas = n
    assert changes == 0 and replicas == 4


def test_tolerance_band_and_bounds() -> None:
    state = ScaleState()
    assert decide(POLICY, 2, 10.5, 0.0, state).replicas == 2  # 5 % over target: no change
    assert decide(POLICY, 8, 500.0, 15.0, state).replicas == 8  # never above max
    assert decide(POLICY, 2, None, 30.0, state).reason == "NoLoadReport"


def test_scale_to_zero_after_idle_and_back_on_demand() -> None:
    policy = Policy(
        min_replicas=0,
        max_replicas=3,
        target=5.0,
        stabilization_s=60.0,
        scale_to_zero=True,
        idle_before_zero_s=120.0,
    )
    state = ScaleState()
    replicas = 1
    t = 0.0
    while replicas > 0 and t < 1000:
        t += 15
        replicas = decide(policy, replicas, 0.0, t, state).replicas
    assert 120 <= t < 1000 and replicas == 0
    # Cold with no demand: stays at zero.
    assert decide(policy, 0, None, t + 15, state).replicas == 0
    # The router signals demand: one replica comes up.
    woke = decide(policy, 0, None, t + 30, state, demand=True)
    assert woke.replicas == 1 and woke.reason == "DemandWhileCold"


def test_min_one_route_never_goes_to_zero() -> None:
    state = ScaleState()
    replicas = 2
    for t in range(0, 3000, 15):
        replicas = decide(POLICY, replicas, 0.0, float(t), state).replicas
    assert replicas == 1


def test_demand_annotation() -> None:
    now = 1_800_000_000.0
    key = "gearshift.dev/demand"
    assert not demand_pending({}, key, since=now - 600, now=now)
    assert demand_pending({key: "2027-01-15T08:00:00Z"}, key, since=0, now=1_800_000_100.0)
    assert not demand_pending({key: "2020-01-01T00:00:00Z"}, key, since=0, now=now)


def test_memory_in_status_is_written_rarely_and_never_restores_an_earlier_scale_down() -> None:
    policy = Policy(min_replicas=1, max_replicas=8, target=5.0, stabilization_s=60.0)

    def load(at: int) -> float:
        return 20.0 if at < 30 else 0.0  # busy at 4 replicas for 30 s, then idle

    def down_at(state: ScaleState, start: int) -> int:
        """When a leader with this memory, seeing the same load from `start`, scales down."""
        for at in range(start, 300, 5):
            if decide(policy, 4, load(at), 1000.0 + at, state).replicas < 4:
                return at
        raise AssertionError("never scaled down")

    uninterrupted = down_at(ScaleState(), 0)
    live, stored, writes = ScaleState(), None, 0
    for tick in range(0, uninterrupted, 5):
        # A new leader taking over at this tick reads the status the old one wrote.
        fresh = state_from_status(stored, 15.0, now=1000.0 + tick) if stored else None
        if fresh is not None:
            taken_over = down_at(fresh, tick)
            assert uninterrupted <= taken_over <= uninterrupted + 15 + 5, (tick, taken_over)
        decide(policy, 4, load(tick), 1000.0 + tick, live)
        if needs_write(live, stored, policy, resolution_s=15.0):
            stored, writes = {"autoscaler": state_to_status(live, policy)}, writes + 1
    assert writes <= 3, writes  # not at every one of the 17 ticks
