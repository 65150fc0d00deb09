"""`gearshift route score FILE.jsonl`: the router's difficulty decision, offline, per line.

Reads JSON objects with a `prompt` (and optionally the small model's `answer`) and writes
each object back with `difficulty` and `tier` (`slm` or `llm` at the current
calibration) and, when there is an answer, `escalate`: the escalation estimator's
probability that the large tier should answer instead. It builds the same parts the
router builds (`QueryEmbedder`, `load_scorer`, `EscalationPolicy`) from the same router
settings (env `GEARSHIFT_ROUTER_*`, or the flags below), so anyone can measure routing on
their own labelled prompts and get the numbers a running router would.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

BATCH = 64


class BadInput(ValueError):
    """A line of the input is not a JSON object with a string `prompt`."""


@dataclass(frozen=True)
class Calibration:
    """The thresholds the router would use."""

    difficulty_threshold: float
    escalate_threshold: float


def add_score_parser(rsub: Any) -> None:
    score = rsub.add_parser(
        "score",
        help="score a JSONL file of prompts (and answers) with the router's own scorer",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    score.add_argument("file", help="JSONL input, one object with 'prompt' per line; - for stdin")
    score.add_argument("-o", "--output", default="-", help="output JSONL (default stdout)")
    score.add_argument(
        "--share",
        type=float,
        default=None,
        help="large-tier share to calibrate for (default: the router's large_share_cap)",
    )
    score.add_argument(
        "--escalation-share",
        type=float,
        default=None,
        help="cascade share for 'escalate' decisions (default: the router's cascade_share)",
    )
    score.set_defaults(func=run)


def read_objects(handle: TextIO, name: str) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(handle, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BadInput(f"{name}:{number}: not JSON ({exc.msg})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str):
            raise BadInput(f"{name}:{number}: expected an object with a string 'prompt'")
        if "answer" in obj and not isinstance(obj["answer"], str):
            raise BadInput(f"{name}:{number}: 'answer' must be a string")
        yield obj


async def score_objects(
    objects: list[dict[str, Any]], share: float | None, escalation_share: float | None
) -> tuple[list[dict[str, Any]], Calibration]:
    """`objects` with difficulty, tier (and escalate) added, as the router decides them."""
    from gearshift.router.app import Settings
    from gearshift.router.cascade.policy import EscalationPolicy
    from gearshift.router.core.context_digest import question_text
    from gearshift.router.core.embedding import QueryEmbedder
    from gearshift.router.scorer.protocol import load_scorer
    from gearshift.v1 import common_pb2

    settings = Settings()
    scorer = load_scorer()
    if share is None and 0.0 <= settings.difficulty_threshold <= 1.0:
        threshold = settings.difficulty_threshold
    else:
        threshold = scorer.threshold_for_share(settings.large_share_cap if share is None else share)
    policy = EscalationPolicy(
        settings.cascade_share if escalation_share is None else escalation_share,
        settings.cascade_threshold if escalation_share is None else -1.0,
    )
    embedder = QueryEmbedder()
    out: list[dict[str, Any]] = []
    try:
        for start in range(0, len(objects), BATCH):
            batch = objects[start : start + BATCH]
            questions = [
                question_text([common_pb2.ChatMessage(role="user", content=o["prompt"])])
                for o in batch
            ]
            vectors = await asyncio.gather(*(embedder.embed(q) for q in questions))
            for obj, question, vector in zip(batch, questions, vectors, strict=True):
                difficulty = scorer.score(vector, question)
                scored = dict(obj, difficulty=round(difficulty, 6))
                scored["tier"] = "llm" if difficulty >= threshold else "slm"
                if "answer" in obj:
                    verdict = policy.judge(question, obj["answer"], common_pb2.FINISH_REASON_STOP)
                    scored["escalate"] = round(verdict.probability, 6)
                out.append(scored)
    finally:
        await embedder.close()
    return out, Calibration(threshold, policy.threshold)


def run(args: argparse.Namespace) -> int:
    for name, value in (("--share", args.share), ("--escalation-share", args.escalation_share)):
        if value is not None and not 0.0 <= value <= 1.0:
            print(f"gearshift route score: {name} must be in [0, 1]", file=sys.stderr)
            return 2
    try:
        if args.file == "-":
            objects = list(read_objects(sys.stdin, "<stdin>"))
        else:
            with open(args.file, encoding="utf-8") as handle:
                objects = list(read_objects(handle, args.file))
    except (OSError, BadInput) as exc:
        print(f"gearshift route score: {exc}", file=sys.stderr)
        return 2
    scored, calibration = asyncio.run(score_objects(objects, args.share, args.escalation_share))
    lines = "".join(json.dumps(o, ensure_ascii=False) + "\n" for o in scored)
    if args.output == "-":
        sys.stdout.write(lines)
    else:
        Path(args.output).write_text(lines, encoding="utf-8")
    large = sum(1 for o in scored if o["tier"] == "llm")
    print(
        f"scored {len(scored)} prompts: {large} to the llm tier "
        f"(difficulty threshold {calibration.difficulty_threshold:.4f}, "
        f"escalate threshold {calibration.escalate_threshold:.4f})",
        file=sys.stderr,
    )
    return 0
