"""The router's outcome machinery, built from its settings and attached to the pipeline."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gearshift.router.outcomes.feedback import OutcomeService
from gearshift.router.outcomes.recorder import DecisionRecorder, RecordDecisions
from gearshift.router.outcomes.shadow import ShadowJudge
from gearshift.router.outcomes.store import OutcomeStore, open_store

if TYPE_CHECKING:
    from gearshift.router.pipeline import Pipeline
    from gearshift.router.settings import Settings


class Outcomes:
    """Store, decision recorder, feedback service and (optionally) the shadow judge."""

    def __init__(
        self,
        store: OutcomeStore,
        recorder: DecisionRecorder,
        service: OutcomeService,
        shadow: ShadowJudge | None,
    ) -> None:
        self.store = store
        self.recorder = recorder
        self.service = service
        self.shadow = shadow

    @classmethod
    def build(cls, settings: Settings, pipeline: Pipeline) -> Outcomes:
        store = open_store(
            settings.outcomes_postgres_url or settings.outcomes_dir,
            timeout_s=settings.outcomes_timeout_s,
        )
        recorder = DecisionRecorder(
            store,
            keep_prompt_text=settings.outcomes_keep_prompt_text,
            queue_max=settings.outcomes_queue_max,
            flush_interval_s=settings.outcomes_flush_interval_s,
            unlabelled_ttl_s=settings.outcomes_unlabelled_ttl_h * 3600.0,
            labelled_retention_s=settings.outcomes_retention_days * 86400.0,
        )
        shared = bool(settings.outcomes_postgres_url)
        service = OutcomeService(
            store,
            recorder,
            timeout_s=settings.outcomes_timeout_s,
            settle_s=settings.outcomes_flush_interval_s + 0.25 if shared else 0.0,
        )
        pipeline.observers.append(RecordDecisions(recorder))
        shadow = None
        if settings.shadow_share > 0:
            shadow = ShadowJudge(
                pipeline.table,
                service,
                share=settings.shadow_share,
                daily_token_budget=settings.shadow_daily_token_budget,
                concurrency=settings.shadow_concurrency,
                timeout_s=settings.shadow_timeout_s,
                max_tokens=settings.shadow_max_tokens,
            )
            pipeline.observers.append(shadow)
        return cls(store, recorder, service, shadow)

    async def start(self) -> None:
        await self.store.open()
        self.recorder.start()

    async def stop(self) -> None:
        if self.shadow is not None:
            await self.shadow.stop()
        await self.recorder.stop()
        await self.store.close()
