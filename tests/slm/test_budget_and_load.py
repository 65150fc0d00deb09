"""Fast checks of the context-fitting rule and the load arithmetic (no engine needed)."""

from __future__ import annotations

import pytest

from gearshift.runtime.errors import InvalidArgument
from gearshift.slm.load import LoadTracker
from gearshift.slm.sampling import token_budget
from gearshift.slm.settings import Settings


def test_unset_max_tokens_fills_the_context() -> None:
    budget = token_budget(prompt_tokens=48, max_model_len=2048, requested=None)
    assert budget.max_tokens == 2000
    assert not budget.clipped


def test_default_max_tokens_applies_when_unset_only() -> None:
    assert token_budget(48, 2048, None, default=64).max_tokens == 64
    assert token_budget(48, 2048, 10, default=64).max_tokens == 10


def test_too_large_max_tokens_is_clipped() -> None:
    budget = token_budget(prompt_tokens=2000, max_model_len=2048, requested=500)
    assert budget.max_tokens == 48
    assert budget.clipped


def test_prompt_without_room_is_refused_with_both_counts() -> None:
    with pytest.raises(InvalidArgument) as err:
        token_budget(prompt_tokens=2048, max_model_len=2048, requested=1)
    description = err.value.violations[0].description
    assert "2048 tokens after the chat template" in description
    assert "context is 2048 tokens" in description


def test_idle_engine_reports_no_load_even_with_a_stale_snapshot() -> None:
    unfinished = [3]
    now = [100.0]
    tracker = LoadTracker(lambda: unfinished[0], clock=lambda: now[0], window_s=10.0)
    tracker.record_scheduler(running=3, waiting=2, kv_cache_usage=0.25)
    tracker.record_iteration(generated_tokens=30, prompt_tokens=10, finished_ids=[])
    now[0] = 110.0
    snap = tracker.snapshot()
    assert (snap.running_requests, snap.waiting_requests) == (3, 0)
    assert snap.kv_cache_usage == 0.25
    assert snap.generated_tokens_per_second == pytest.approx(3.0)
    unfinished[0] = 0  # the last request was aborted: the engine sends no new step
    snap = tracker.snapshot()
    assert (snap.running_requests, snap.waiting_requests, snap.kv_cache_usage) == (0, 0, 0.0)
    now[0] = 121.0
    assert tracker.snapshot().generated_tokens_per_second == 0.0


def test_a_wedged_engine_is_told_from_an_idle_one() -> None:
    """Stall = calls in flight and no engine step; idle time before a call does not count."""
    now = [0.0]
    tracker = LoadTracker(clock=lambda: now[0])
    now[0] = 500.0  # idle for a long time: not a stall
    assert tracker.stalled_for_s() == 0.0
    tracker.request_started()
    now[0] = 501.0
    tracker.record_iteration(generated_tokens=1, prompt_tokens=5, finished_ids=[])
    now[0] = 503.0
    assert tracker.stalled_for_s() == pytest.approx(2.0)
    now[0] = 570.0  # the engine process stopped stepping: a wedge the SLM app acts on
    assert tracker.stalled_for_s() == pytest.approx(69.0)
    tracker.request_ended("abort")
    assert tracker.stalled_for_s() == 0.0


def test_settings_env_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEARSHIFT_SLM_MAX_MODEL_LEN", "4096")
    monkeypatch.setenv("GEARSHIFT_SLM_EXTRA_ENGINE_ARGS", '{"max_num_seqs": 8}')
    monkeypatch.setenv("GEARSHIFT_SLM_ENFORCE_EAGER", "false")
    settings = Settings()
    assert settings.grpc_port == 50053
    assert settings.max_model_len == 4096
    assert settings.extra_args() == {"max_num_seqs": 8}
    assert settings.enforce_eager is False
    monkeypatch.setenv("GEARSHIFT_SLM_EXTRA_ENGINE_ARGS", "[1]")
    with pytest.raises(ValueError):
        Settings()


def test_served_name_follows_the_model_setting() -> None:
    from gearshift.slm.engine import resolve_model

    hub = resolve_model(Settings(model="HuggingFaceTB/SmolLM2-1.7B-Instruct"))
    assert (hub.source, hub.served_name) == (
        "HuggingFaceTB/SmolLM2-1.7B-Instruct",
        "SmolLM2-1.7B-Instruct",
    )
    assert resolve_model(Settings(model="/models/qwen-1.5b/")).served_name == "qwen-1.5b"
    named = resolve_model(Settings(model="/models/q", served_model_name="small"))
    assert named.served_name == "small"


def test_engine_validation_errors_become_invalid_argument() -> None:
    from gearshift.slm.servicer import as_invalid_argument

    class VLLMClientError(Exception):
        pass

    class VLLMValidationError(VLLMClientError):
        parameter = "seed"

    refused = as_invalid_argument(VLLMValidationError("seed out of range"))
    assert refused is not None
    assert refused.violations[0].field == "sampling.seed"
    plain = as_invalid_argument(ValueError("bad"))
    assert plain is not None and plain.violations[0].field == "sampling"
    assert as_invalid_argument(RuntimeError("engine died")) is None
