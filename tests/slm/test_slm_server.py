"""The SLM server end to end: real gRPC over loopback, real vLLM CPU engine, real model.

The engine starts once per session (`slm_server` fixture); every test keeps its
answers short so the file stays quick on two CPU cores.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gearshift.runtime.errors import field_violations
from gearshift.runtime.server import GrpcServiceHost
from gearshift.runtime.telemetry import insecure_channel
from gearshift.slm.app import Settings, SlmApp
from gearshift.v1 import common_pb2, inference_pb2, inference_pb2_grpc
from tests.fixtures.slm import SlmServer

pytestmark = pytest.mark.vllm

Stub = inference_pb2_grpc.InferenceServiceStub


def ask(
    question: str,
    *,
    max_tokens: int = 16,
    temperature: float | None = 0.0,
    model: str = "",
    **sampling: object,
) -> inference_pb2.GenerateRequest:
    params = common_pb2.SamplingParams(max_tokens=max_tokens, **sampling)  # type: ignore[arg-type]
    if temperature is not None:
        params.temperature = temperature
    return inference_pb2.GenerateRequest(
        model=model,
        messages=[common_pb2.ChatMessage(role="user", content=question)],
        sampling=params,
    )


async def wait_until_idle(server: SlmServer) -> None:
    for _ in range(200):
        if server.engine.engine.get_num_unfinished_requests() == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("engine still has unfinished requests")


async def test_health_serving_and_model_info(slm_server: SlmServer, slm_stub: Stub) -> None:
    async with insecure_channel(slm_server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(
            health_pb2.HealthCheckRequest(service="gearshift.v1.InferenceService"), timeout=10
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    info = await slm_stub.GetModelInfo(inference_pb2.GetModelInfoRequest(), timeout=10)
    assert info.model == "smollm2-135m-instruct"
    assert info.backend == "vllm"
    assert info.max_context_tokens == 2048
    assert info.ready


async def test_factual_greedy_answer(slm_server: SlmServer, slm_stub: Stub) -> None:
    reply = await slm_stub.Generate(
        ask("What is the capital of France?", max_tokens=24), timeout=120
    )
    # The engine reported the natural finish under the request's id (the cancel test
    # relies on this record to show a cancelled request never finished).
    assert any(i.startswith(reply.request_id) for i in slm_server.engine.load.engine_finished_ids)
    assert "Paris" in reply.text
    assert reply.model == "smollm2-135m-instruct"
    assert reply.request_id
    assert reply.usage.prompt_tokens > 10  # the chat template added the system turn
    assert reply.usage.completion_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert reply.time_to_first_token_ms > 0
    assert reply.finish_reason in (common_pb2.FINISH_REASON_STOP, common_pb2.FINISH_REASON_LENGTH)


async def test_stream_concatenates_to_unary_answer(slm_stub: Stub) -> None:
    request = ask("Name three colours of the rainbow.", max_tokens=24)
    request.request_id = "stream-vs-unary"
    unary = await slm_stub.Generate(request, timeout=120)
    chunks = [c async for c in slm_stub.GenerateStream(request, timeout=120)]
    assert len(chunks) > 1  # chunks arrive as tokens are produced, not in one piece
    assert "".join(c.text_delta for c in chunks) == unary.text
    assert all(c.request_id == "stream-vs-unary" for c in chunks)
    assert chunks[-1].finish_reason == unary.finish_reason
    assert all(c.finish_reason == common_pb2.FINISH_REASON_UNSPECIFIED for c in chunks[:-1])
    assert chunks[-1].usage.completion_tokens == unary.usage.completion_tokens


async def test_max_tokens_gives_length_finish(slm_stub: Stub) -> None:
    reply = await slm_stub.Generate(ask("Tell me a long story about a dragon.", max_tokens=5))
    assert reply.finish_reason == common_pb2.FINISH_REASON_LENGTH
    assert reply.usage.completion_tokens == 5


async def test_stop_sequence_and_seed_and_logprobs(slm_stub: Stub) -> None:
    greedy = await slm_stub.Generate(ask("What is the capital of France?", max_tokens=24))
    assert "Paris" in greedy.text
    cut = await slm_stub.Generate(
        ask("What is the capital of France?", max_tokens=24, stop=["Paris"])
    )
    assert "Paris" not in cut.text
    assert greedy.text.startswith(cut.text)
    assert cut.finish_reason == common_pb2.FINISH_REASON_STOP

    # Sampling at temperature 1 with the same seed reproduces the same answer.
    seeded = ask("Write a word.", max_tokens=8, temperature=1.0, seed=1234, top_p=0.9)
    first = await slm_stub.Generate(seeded)
    second = await slm_stub.Generate(seeded)
    assert first.text == second.text

    with_lp = await slm_stub.Generate(
        ask("Say hello.", max_tokens=4, logprobs=True, top_logprobs=3)
    )
    assert len(with_lp.logprobs) == with_lp.usage.completion_tokens
    for position in with_lp.logprobs:
        assert position.logprob <= 0.0
        assert len(position.top) == 3
        assert position.top[0].logprob >= position.top[-1].logprob
        # Greedy: the chosen token is the most likely one.
        assert position.token == position.top[0].token
    assert "".join(p.token for p in with_lp.logprobs) == with_lp.text


async def test_sixteen_concurrent_requests_are_batched(
    slm_server: SlmServer, slm_stub: Stub
) -> None:
    await wait_until_idle(slm_server)
    tracker = slm_server.engine.load
    tracker.reset_peak()
    seen_running: list[int] = []
    done = asyncio.Event()

    async def watch() -> None:
        while not done.is_set():
            info = await slm_stub.GetModelInfo(inference_pb2.GetModelInfoRequest(), timeout=5)
            seen_running.append(info.load.running_requests)
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch())
    replies = await asyncio.gather(
        *(
            slm_stub.Generate(ask(f"Count to {i + 3}.", max_tokens=12), timeout=300)
            for i in range(16)
        )
    )
    done.set()
    await watcher
    assert len(replies) == 16
    assert all(r.usage.completion_tokens > 0 for r in replies)
    assert len({r.request_id for r in replies}) == 16
    # The engine ran several at once (continuous batching, no lock in the server).
    assert tracker.peak_running > 1
    assert max(seen_running) > 1


async def test_load_figures_move_under_load(slm_server: SlmServer, slm_stub: Stub) -> None:
    await wait_until_idle(slm_server)
    idle = await slm_stub.GetModelInfo(inference_pb2.GetModelInfoRequest(), timeout=5)
    assert idle.load.running_requests == 0
    assert idle.load.waiting_requests == 0
    assert idle.load.kv_cache_usage == 0.0

    calls = [
        asyncio.ensure_future(
            slm_stub.Generate(ask("Describe the sea.", max_tokens=24), timeout=300)
        )
        for _ in range(6)
    ]
    busy: list[inference_pb2.LoadReport] = []
    while not all(c.done() for c in calls):
        info = await slm_stub.GetModelInfo(inference_pb2.GetModelInfoRequest(), timeout=5)
        busy.append(info.load)
        await asyncio.sleep(0.05)
    await asyncio.gather(*calls)
    assert max(b.running_requests for b in busy) > 0
    assert max(b.kv_cache_usage for b in busy) > 0.0
    assert max(b.generated_tokens_per_second for b in busy) > 0.0
    after = await slm_stub.GetModelInfo(inference_pb2.GetModelInfoRequest(), timeout=5)
    assert after.load.time_to_first_token_p50_ms > 0.0
    assert after.load.generated_tokens_per_second > 0.0
    assert after.load.running_requests == 0


async def test_prometheus_exports_load(slm_server: SlmServer, slm_stub: Stub) -> None:
    from prometheus_client import REGISTRY, generate_latest

    await slm_stub.Generate(ask("Hi!", max_tokens=2), timeout=60)
    text = generate_latest(REGISTRY).decode()
    for name in (
        "gearshift_slm_running_requests",
        "gearshift_slm_waiting_requests",
        "gearshift_slm_kv_cache_usage_ratio",
        "gearshift_slm_generated_tokens_per_second",
        "gearshift_slm_time_to_first_token_p50_seconds",
        "gearshift_slm_generated_tokens_total",
        "vllm:num_requests_running",  # vLLM's own metrics are exported beside ours
    ):
        assert name in text, name


async def test_cancelled_stream_is_aborted_in_engine(slm_server: SlmServer, slm_stub: Stub) -> None:
    await wait_until_idle(slm_server)
    tracker = slm_server.engine.load
    aborted_before = tracker.aborted_total.get("cancelled", 0)
    tokens_before = tracker.generated_tokens_total
    request = ask("Write a very long essay about the history of Europe.", max_tokens=1500)
    request.request_id = "to-be-cancelled"
    call = slm_stub.GenerateStream(request, timeout=300)
    received = 0
    async for _chunk in call:
        received += 1
        if received == 2:
            break
    call.cancel()
    await wait_until_idle(slm_server)
    assert tracker.aborted_total.get("cancelled", 0) == aborted_before + 1
    # It never finished in the engine: no natural finish was reported for it...
    assert not any(i.startswith("to-be-cancelled") for i in tracker.engine_finished_ids)
    # ...and the engine stopped generating for it long before max_tokens.
    await asyncio.sleep(0.5)
    assert tracker.generated_tokens_total - tokens_before < 200
    info = await slm_stub.GetModelInfo(inference_pb2.GetModelInfoRequest(), timeout=5)
    assert info.load.running_requests == 0


async def test_cancelled_unary_call_is_aborted_in_engine(
    slm_server: SlmServer, slm_stub: Stub
) -> None:
    # The router cancels unary calls too (a client gone, a losing multi-route branch): the
    # engine must stop generating for them rather than run to max_tokens unseen.
    await wait_until_idle(slm_server)
    tracker = slm_server.engine.load
    aborted_before = tracker.aborted_total.get("cancelled", 0)
    tokens_before = tracker.generated_tokens_total
    request = ask("Write a very long essay about the history of Africa.", max_tokens=1500)
    request.request_id = "unary-to-be-cancelled"
    call = slm_stub.Generate(request, timeout=300)
    for _ in range(400):  # until the engine has started on it
        if tracker.generated_tokens_total > tokens_before:
            break
        await asyncio.sleep(0.025)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await wait_until_idle(slm_server)
    for _ in range(100):
        if tracker.aborted_total.get("cancelled", 0) > aborted_before:
            break
        await asyncio.sleep(0.05)
    assert tracker.aborted_total.get("cancelled", 0) == aborted_before + 1
    assert not any(i.startswith("unary-to-be-cancelled") for i in tracker.engine_finished_ids)
    assert tracker.generated_tokens_total - tokens_before < 300


async def test_deadline_aborts_engine_request(slm_server: SlmServer, slm_stub: Stub) -> None:
    await wait_until_idle(slm_server)
    tracker = slm_server.engine.load
    before = tracker.aborted_total.get("deadline", 0)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await slm_stub.Generate(
            ask("Write a very long essay about the history of Asia.", max_tokens=1500),
            timeout=1.0,
        )
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await wait_until_idle(slm_server)
    for _ in range(100):
        if tracker.aborted_total.get("deadline", 0) > before:
            break
        await asyncio.sleep(0.05)
    assert tracker.aborted_total.get("deadline", 0) == before + 1


async def test_oversize_prompt_is_invalid_argument_with_both_counts(slm_stub: Stub) -> None:
    long_text = "word " * 2100
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await slm_stub.Generate(ask(long_text, max_tokens=8), timeout=60)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = err.value.details() or ""
    assert "2048" in details  # the context size
    violations = field_violations(err.value)
    assert violations and violations[0].field == "messages"
    counts = [int(w) for w in violations[0].description.split() if w.isdigit()]
    assert 2048 in counts and any(c > 2048 for c in counts)


async def test_max_tokens_is_clipped_to_the_context(slm_stub: Stub) -> None:
    # ~1990 prompt tokens leave a few dozen for the answer; asking for 4000 is clipped.
    text = "one two three four five six seven eight nine ten " * 198
    reply = await slm_stub.Generate(ask(text, max_tokens=4000), timeout=300)
    assert reply.usage.total_tokens <= 2048
    assert reply.usage.prompt_tokens > 1900


async def test_unknown_model_is_not_found(slm_stub: Stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await slm_stub.Generate(ask("Hello", model="gpt-17-ultra"), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "gpt-17-ultra" in (err.value.details() or "")
    named = await slm_stub.Generate(ask("Hello", model="smollm2-135m-instruct", max_tokens=2))
    assert named.model == "smollm2-135m-instruct"


@pytest.mark.parametrize(
    ("sampling", "field"),
    [
        ({"temperature": 3.0}, "sampling.temperature"),
        ({"top_p": 0.0}, "sampling.top_p"),
        ({"top_logprobs": 5}, "sampling.top_logprobs"),
        ({"stop": [""]}, "sampling.stop"),
    ],
)
async def test_bad_sampling_is_invalid_argument_naming_the_field(
    slm_stub: Stub, sampling: dict[str, object], field: str
) -> None:
    request = ask("Hello", max_tokens=4, temperature=None)
    for key, value in sampling.items():
        if isinstance(value, list):
            getattr(request.sampling, key).extend(value)
        else:
            setattr(request.sampling, key, value)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await slm_stub.Generate(request, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in [v.field for v in field_violations(err.value)]


async def test_stop_with_grace_lets_in_flight_generation_finish(slm_server: SlmServer) -> None:
    # A second host on the same engine (the app does not own it, so stop() keeps it).
    settings = Settings(host="127.0.0.1", grpc_port=0, metrics_port=-1, log_format="text")
    app = SlmApp(settings, engine=slm_server.engine)
    host = GrpcServiceHost(app, settings)
    port = await host.start()
    async with insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = Stub(channel)
        call = asyncio.ensure_future(
            stub.Generate(ask("Tell me a long story about a dragon.", max_tokens=48), timeout=120)
        )
        await asyncio.sleep(0.3)  # the request is in flight
        assert not call.done()
        await host.stop(60)
        reply = await call
    assert reply.usage.completion_tokens == 48
    assert reply.finish_reason == common_pb2.FINISH_REASON_LENGTH
    assert slm_server.engine.warm  # the shared engine survives


def test_engine_args_follow_the_hardware_and_settings(default_model_dir: Path) -> None:
    from gearshift.slm.engine import ModelChoice, engine_args

    choice = ModelChoice(str(default_model_dir), "x")
    cpu = engine_args(Settings(extra_engine_args='{"max_num_seqs": 4}'), choice, cpu=True)
    assert (cpu.dtype, cpu.enforce_eager, cpu.max_num_seqs) == ("float32", True, 4)
    assert cpu.served_model_name == ["x"]
    gpu = engine_args(Settings(tensor_parallel_size=2), choice, cpu=False)
    assert (gpu.dtype, gpu.enforce_eager, gpu.tensor_parallel_size) == ("auto", False, 2)
    assert gpu.gpu_memory_utilization == 0.9
    pinned = engine_args(Settings(dtype="bfloat16"), choice, cpu=False)
    assert pinned.dtype == "bfloat16"  # an explicit dtype is passed through
    with pytest.raises(ValueError, match="no_such_arg"):
        engine_args(Settings(extra_engine_args='{"no_such_arg": 1}'), choice, cpu=True)


def test_gpu_auto_dtype_is_float16_on_a_gpu_without_bfloat16(
    default_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A T4 or V100 has no bfloat16: what we pass for `auto` must let vLLM pick float16."""
    import torch
    from transformers import AutoConfig
    from vllm.config import model as vllm_model_config
    from vllm.platforms import current_platform

    from gearshift.slm.engine import ModelChoice, engine_args

    t4 = [torch.float16, torch.float32]
    monkeypatch.setattr(type(current_platform), "supported_dtypes", property(lambda _: t4))
    hf_config = AutoConfig.from_pretrained(default_model_dir)
    args = engine_args(Settings(), ModelChoice(str(default_model_dir), "x"), cpu=False)
    resolved = vllm_model_config._get_and_verify_dtype(
        str(default_model_dir), hf_config, args.dtype, is_pooling_model=False
    )
    assert resolved == torch.float16


def test_contract_sampling_maps_onto_vllm() -> None:
    from vllm.sampling_params import RequestOutputKind

    from gearshift.slm.sampling import to_vllm

    unset = to_vllm(common_pb2.SamplingParams(), max_tokens=7)
    # Unset temperature is 1.0 (as in the OpenAI API), never greedy by accident.
    assert (unset.temperature, unset.top_p, unset.max_tokens) == (1.0, 1.0, 7)
    assert unset.logprobs is None and unset.seed is None
    assert unset.output_kind == RequestOutputKind.DELTA
    full = to_vllm(
        common_pb2.SamplingParams(
            temperature=0.7, top_p=0.5, stop=["\n\n"], seed=7, logprobs=True, top_logprobs=3
        ),
        max_tokens=5,
    )
    assert (full.top_p, full.seed, full.logprobs) == (0.5, 7, 3)
    assert full.temperature == pytest.approx(0.7)
    assert full.stop == ["\n\n"]
    only_chosen = to_vllm(common_pb2.SamplingParams(logprobs=True), max_tokens=5)
    assert only_chosen.logprobs == 0
