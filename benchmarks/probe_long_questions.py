"""Does the cache's verifier still tell questions apart behind a long shared context?

    python benchmarks/probe_long_questions.py

Different-meaning question pairs and true paraphrases are each placed after the same
first N words of a user's description of their situation (as a chat user or a RAG
prompt would), and the verifier judges them at the default `max_false_hit_rate`.
The cache's `max_semantic_words` default comes from where wrong pairs start to pass.
"""

from __future__ import annotations

import time

from gearshift.cache.settings import Settings
from gearshift.cache.verifier import Verifier
from gearshift.dev.machine import describe_machine
from gearshift.embeddings import shared_embedder

SITUATION = (
    "I moved to London for work last year and I use English every day in meetings, but I "
    "still freeze when I have to speak in front of people, I lose words, I translate in my "
    "head from my native language and my sentences come out slowly and with mistakes. I "
    "read a lot and my written English is fine, I watch series with subtitles and I have "
    "tried two apps, but none of this made speaking easier. My manager says my ideas are "
    "good but hard to follow."
).split()
DIFFERENT = [
    (
        "How can I improve my English speaking skills?",
        "How can I improve my English writing skills?",
    ),
    (
        "How can I improve my English speaking skills?",
        "How can I improve my French speaking skills?",
    ),
    ("Should I take a speaking course?", "Should I take a writing course?"),
    ("Is it worth hiring a private tutor?", "Is it worth hiring a speech therapist?"),
    ("How long will it take to become fluent?", "How much will it cost to become fluent?"),
    ("Should I quit my job?", "Should I ask for a new job?"),
    ("Will an online course help with my accent?", "Will an online course help with my grammar?"),
    ("Do I need to practise every day?", "Do I need to practise every week?"),
]
SAME = [
    (
        "How can I improve my English speaking skills?",
        "How do I improve my English speaking skills?",
    ),
    ("Should I take a speaking course?", "Should I sign up for a speaking course?"),
    ("Is it worth hiring a private tutor?", "Is hiring a private tutor worth it?"),
    ("How long will it take to become fluent?", "How long does it take to become fluent?"),
]
CONTEXT_WORDS = (0, 20, 40, 50, 60, 70, 80)


def main() -> None:
    started = time.monotonic()
    embedder, verifier = shared_embedder(), Verifier()
    threshold = verifier.threshold_for(Settings().max_false_hit_rate).threshold

    def served(context: str, pairs: list[tuple[str, str]]) -> int:
        a = [context + x for x, _ in pairs]
        b = [context + y for _, y in pairs]
        probs = verifier.predict(a, b, embedder.embed(a), embedder.embed(b))
        return int((probs >= threshold).sum())

    print(f"Machine: {describe_machine()}; verifier threshold {threshold:.3f}\n")
    print("| context words | longest question (words) | wrong pairs served | paraphrases served |")
    print("|---:|---:|---:|---:|")
    for n in CONTEXT_WORDS:
        context = " ".join(SITUATION[:n]) + (" " if n else "")
        longest = max(len((context + q).split()) for pair in DIFFERENT + SAME for q in pair)
        wrong, right = served(context, DIFFERENT), served(context, SAME)
        print(f"| {n} | {longest} | {wrong}/{len(DIFFERENT)} | {right}/{len(SAME)} |")
    print(f"\n({time.monotonic() - started:.0f}s)")


if __name__ == "__main__":
    main()
