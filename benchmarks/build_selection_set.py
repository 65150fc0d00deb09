"""Builds the labelled selection set for `gearshift route eval` from the shared routing data.

Reads `routing_dev.jsonl` (MMLU and GSM8K prompts) and writes one JSON object per line,
`{"prompt": ..., "label": ...}`: the label of an MMLU prompt is the data source its subject
belongs to in benchmarks/data/mmlu_sources.yaml, a GSM8K prompt is labelled `none` (no
source should take an arithmetic word problem). MMLU's `miscellaneous` and `global_facts`
subjects fit no single source and are left out. The shared data is not copied into the
repository: run this script to produce the file.

    python benchmarks/build_selection_set.py --out /tmp/selection.jsonl
    gearshift route eval --routes benchmarks/data/mmlu_sources.yaml --data /tmp/selection.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from gearshift.dev.data import shared_data_dir

SHARED = shared_data_dir() / "routing_dev.jsonl"

SUBJECTS: dict[str, tuple[str, ...]] = {
    "law": ("professional_law", "international_law", "jurisprudence"),
    "medicine": (
        "anatomy",
        "clinical_knowledge",
        "college_medicine",
        "professional_medicine",
        "medical_genetics",
        "nutrition",
        "virology",
        "human_aging",
        "human_sexuality",
    ),
    "mathematics": (
        "abstract_algebra",
        "college_mathematics",
        "elementary_mathematics",
        "high_school_mathematics",
        "high_school_statistics",
    ),
    "computing": (
        "college_computer_science",
        "high_school_computer_science",
        "computer_security",
        "machine_learning",
        "electrical_engineering",
    ),
    "sciences": (
        "astronomy",
        "college_biology",
        "high_school_biology",
        "college_chemistry",
        "high_school_chemistry",
        "college_physics",
        "high_school_physics",
        "conceptual_physics",
    ),
    "history-politics": (
        "high_school_european_history",
        "high_school_us_history",
        "high_school_world_history",
        "prehistory",
        "high_school_government_and_politics",
        "us_foreign_policy",
        "security_studies",
        "high_school_geography",
        "world_religions",
    ),
    "economics-business": (
        "high_school_macroeconomics",
        "high_school_microeconomics",
        "econometrics",
        "business_ethics",
        "management",
        "marketing",
        "professional_accounting",
        "public_relations",
    ),
    "mind-society": (
        "philosophy",
        "moral_disputes",
        "moral_scenarios",
        "formal_logic",
        "logical_fallacies",
        "high_school_psychology",
        "professional_psychology",
        "sociology",
    ),
}
LEFT_OUT = frozenset({"miscellaneous", "global_facts"})


def label_of(row: dict[str, str]) -> str | None:
    """The expected option for one shared row, or None when the row is left out."""
    if row["benchmark"] == "gsm8k":
        return "none"
    subject = row.get("domain", "")
    for source, subjects in SUBJECTS.items():
        if subject in subjects:
            return source
    if subject in LEFT_OUT:
        return None
    raise ValueError(f"subject {subject!r} is not mapped to a source")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--per-label", type=int, default=0, help="cap per label (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    by_label: dict[str, list[str]] = {}
    with args.data.open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            label = label_of(row)
            if label is not None:
                by_label.setdefault(label, []).append(row["prompt"])
    rng = random.Random(args.seed)
    rows = []
    for label, prompts in sorted(by_label.items()):
        if args.per_label and len(prompts) > args.per_label:
            prompts = rng.sample(prompts, args.per_label)
        rows += [{"prompt": p, "label": label} for p in prompts]
    with args.out.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    counts = ", ".join(f"{k} {len(v)}" for k, v in sorted(by_label.items()))
    print(f"wrote {len(rows)} rows to {args.out} ({counts})")


if __name__ == "__main__":
    main()
