"""Builds and owns vLLM's in-process async engine (`AsyncLLM`).

One `SlmEngine` per process: it resolves which model to serve, picks engine arguments
suited to the hardware (CPU build: float32, eager, a small KV cache; GPU: vLLM's own
`auto` dtype, which picks float16 on GPUs without bfloat16 such as T4 and V100),
starts the engine off the event loop so health checks keep answering while it loads,
hooks the load tracker into vLLM's stat loggers, and warms it up.

vLLM starts its engine-core worker as a separate process; this module is importable
on purpose, because the worker cannot be started from code fed on stdin.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import uuid
from pathlib import Path
from typing import Any

from gearshift.models.prepare import DEFAULT_MODEL_NAME, prepare_default_model
from gearshift.slm.chat_template import ChatTokenizer
from gearshift.slm.load import (
    LoadCollector,
    LoadTracker,
    make_stat_logger_factory,
    register_collector,
)
from gearshift.slm.settings import Settings

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ModelChoice:
    """What the engine loads and the name clients use for it."""

    source: str
    served_name: str


def resolve_model(settings: Settings) -> ModelChoice:
    """Settings → model path/id and served name (the embedded default when unset)."""
    if not settings.model:
        path = prepare_default_model()
        return ModelChoice(str(path), settings.served_model_name or DEFAULT_MODEL_NAME)
    name = settings.served_model_name or Path(settings.model.rstrip("/")).name
    return ModelChoice(settings.model, name)


def on_cpu() -> bool:
    """True under the CPU build of vLLM (no accelerator)."""
    from vllm.platforms import current_platform

    return bool(current_platform.is_cpu())


def engine_args(settings: Settings, choice: ModelChoice, cpu: bool) -> Any:
    """`AsyncEngineArgs` for the settings; `extra_engine_args` override the derived ones."""
    from vllm.engine.arg_utils import AsyncEngineArgs

    dtype = settings.dtype
    if dtype == "auto" and cpu:
        dtype = "float32"  # vLLM's CPU auto would pick a half type the build may run slowly
    # On a GPU `auto` stays auto: vLLM takes the checkpoint's dtype if the device supports
    # it and falls back to float16 where bfloat16 is missing (T4, V100); forcing bfloat16
    # there fails at start-up.
    enforce_eager = cpu if settings.enforce_eager is None else settings.enforce_eager
    kwargs: dict[str, Any] = {
        "model": choice.source,
        "served_model_name": [choice.served_name],
        "dtype": dtype,
        "max_model_len": settings.max_model_len,
        "gpu_memory_utilization": settings.gpu_memory_utilization,
        "tensor_parallel_size": settings.tensor_parallel_size,
        "enforce_eager": enforce_eager,
        "disable_log_stats": False,  # the load figures come from the stat loggers
        "enable_log_requests": False,  # request logs would carry prompts
    }
    extra = settings.extra_args()
    known = {f.name for f in dataclasses.fields(AsyncEngineArgs)}
    unknown = sorted(set(extra) - known)
    if unknown:
        raise ValueError(f"extra_engine_args has unknown AsyncEngineArgs fields: {unknown}")
    kwargs.update(extra)
    return AsyncEngineArgs(**kwargs)


class SlmEngine:
    """A started `AsyncLLM` plus what the servicer needs beside it."""

    def __init__(self, engine: Any, served_name: str, tracker: LoadTracker) -> None:
        self.engine = engine
        self.served_name = served_name
        self.load = tracker
        self.tokenizer: ChatTokenizer = engine.get_tokenizer()
        self.max_model_len = int(engine.model_config.max_model_len)
        self.warm = False
        self._collector: LoadCollector | None = None
        self._closed = False

    @classmethod
    async def create(cls, settings: Settings) -> SlmEngine:
        """Starts the engine in a worker thread (a minute on CPU) and registers metrics."""
        choice = await asyncio.to_thread(resolve_model, settings)
        cpu = await asyncio.to_thread(on_cpu)
        if cpu:
            os.environ["VLLM_CPU_KVCACHE_SPACE"] = f"{settings.kv_cache_space_gib:g}"
        args = engine_args(settings, choice, cpu)
        holder: list[Any] = []
        tracker = LoadTracker(lambda: holder[0].get_num_unfinished_requests() if holder else 0)
        factory = make_stat_logger_factory(tracker)

        def build() -> Any:
            from vllm.v1.engine.async_llm import AsyncLLM

            return AsyncLLM.from_engine_args(args, stat_loggers=[factory])

        log.info("starting vLLM engine for %s (%s, cpu=%s)", choice.served_name, args.dtype, cpu)
        engine = await asyncio.to_thread(build)
        holder.append(engine)
        self = cls(engine, choice.served_name, tracker)
        self._collector = register_collector(tracker, choice.served_name)
        return self

    @property
    def dead(self) -> bool:
        """Whether the engine can no longer generate (vLLM's `errored`).

        vLLM's monitor thread marks the engine dead within moments of the engine-core
        process exiting (kill -9, out of memory); the output handler ending has the same
        meaning. A dead engine never comes back: the process must be replaced.
        """
        return not self._closed and bool(getattr(self.engine, "errored", False))

    def engine_input(self, token_ids: list[int]) -> Any:
        """Prompt token ids in the form `AsyncLLM.generate` takes without re-tokenizing.

        vLLM 0.32 deprecates raw prompts in favour of the renderer's output; older or
        other builds without a renderer still take the plain token prompt.
        """
        prompt = {"prompt_token_ids": token_ids}
        renderer = getattr(self.engine, "renderer", None)
        if renderer is None or not hasattr(renderer, "render_cmpl"):
            return prompt
        return renderer.render_cmpl([prompt])[0]

    async def warmup(self) -> None:
        """One tiny greedy generation, so the first real request pays no first-use costs."""
        from vllm.sampling_params import SamplingParams

        params = SamplingParams(max_tokens=2, temperature=0.0)
        ids = self.tokenizer.encode("Hello", add_special_tokens=False)
        async for _ in self.engine.generate(
            self.engine_input(ids), params, request_id=f"warmup-{uuid.uuid4().hex}"
        ):
            pass
        self.warm = True

    def shutdown(self) -> None:
        """Stops the engine-core process and unregisters the metrics."""
        if self._closed:
            return
        self._closed = True
        self.warm = False
        if self._collector is not None:
            from prometheus_client import REGISTRY

            REGISTRY.unregister(self._collector)
            self._collector = None
        self.engine.shutdown()
