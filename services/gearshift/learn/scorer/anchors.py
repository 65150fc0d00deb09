"""Hand-written anchor prompts: chit-chat and trivia that are easy, open tasks that are hard.

No public routing benchmark holds "hi" or "thanks", and MMLU / GSM8K hold no proofs,
derivations or real programming tasks, so a scorer trained on them alone cannot place
what users actually type. These prompts were written for this project (no dataset was
copied) from templates and short word lists; they ship with the package and may train
shipped weights. The examples quoted in issue 13 ("hi", "Translate 'good morning' into
French.", the primes and Black-Scholes prompts, "What is 2+2?") are left out on purpose,
so the tests can use them as held-out checks. They enter training as two extra domains
with fixed outcomes:

* `anchor-easy` (greetings, thanks, small talk, one-step arithmetic, short translations,
  one-fact questions, spelling): both tiers answer well, gain 0, and they mark the
  region of embedding space where the small tier is enough.
* `anchor-hard` (proofs, derivations, substantial code, multi-step analysis): only the
  large tier answers well, gain +1.

The two domains give the ridge a direction from "small talk" to "open hard task" that
the benchmark data never showed it; their centroids give the nearest-centroid prior a
place for chat traffic, so chat no longer falls into the "unfamiliar" band.
"""

from __future__ import annotations

import itertools

import numpy as np

from gearshift.learn.routing_data import RoutingData

EASY_DOMAIN = "anchor-easy"
HARD_DOMAIN = "anchor-hard"

_GREETINGS = [
    "hello",
    "Hello there",
    "hey",
    "hey, how are you?",
    "Good morning!",
    "good evening",
    "How are you doing today?",
    "What's up?",
    "yo",
    "thanks",
    "Thank you!",
    "thank you so much, that helped",
    "Thanks a lot.",
    "ok",
    "okay thanks",
    "cool",
    "great, thanks!",
    "bye",
    "Goodbye, see you tomorrow.",
    "Nice to meet you.",
    "Who are you?",
    "What is your name?",
    "Are you a robot?",
    "Can you hear me?",
    "test",
    "lol",
    "good night",
    "I'm back.",
    "Tell me a joke.",
    "Say something nice.",
    "How's the weather where you are?",
    "Sorry, my mistake.",
    "Never mind.",
    "Yes please.",
    "No, that's all.",
    "Have a nice day!",
    "What can you do?",
    "Happy birthday!",
]
_NUMBERS = [(4, 3), (3, 5), (7, 8), (10, 4), (12, 3), (9, 6), (15, 5), (100, 25), (6, 7)]
_ARITHMETIC = [
    "What is {a}+{b}?",
    "what's {a} times {b}",
    "How much is {a} minus {b}?",
    "{a} + {b} = ?",
]
_PHRASES = [
    "see you later",
    "thank you",
    "hello",
    "goodbye",
    "I love you",
    "how are you",
    "good night",
    "where is the station",
    "cat",
    "water",
]
_LANGUAGES = ["French", "Spanish", "German", "Italian", "Japanese"]
_TRANSLATE = ["Translate '{p}' into {lang}.", "How do you say '{p}' in {lang}?"]
_FACTS = [
    "What is the capital of France?",
    "What is the capital of Japan?",
    "What colour is the sky on a clear day?",
    "How many days are in a week?",
    "How many legs does a spider have?",
    "What is the boiling point of water in Celsius?",
    "Who wrote Romeo and Juliet?",
    "What is the largest planet in our solar system?",
    "What day comes after Monday?",
    "Is the sun a star?",
    "What is the opposite of hot?",
    "Name three colours.",
    "What sound does a dog make?",
    "How many hours are in a day?",
    "What is the freezing point of water?",
    "Which animal is known as the king of the jungle?",
    "What language is spoken in Brazil?",
    "How many continents are there?",
    "What is H2O?",
    "Give me a synonym for happy.",
    "What rhymes with cat?",
    "How do you spell necessary?",
    "What does 'big' mean?",
    "Is a tomato a fruit?",
    "What time zone is London in?",
    "Recommend a good book.",
    "Suggest a name for my cat.",
    "What should I eat for lunch?",
    "Write a one-line birthday message for my mom.",
    "Give me a fun fact.",
]

_THEOREMS = [
    "there are infinitely many Pythagorean triples",
    "the square root of 2 is irrational",
    "every finite integral domain is a field",
    "a continuous function on a closed bounded interval attains its maximum",
    "the harmonic series diverges",
    "there is no surjection from a set onto its power set",
    "every planar graph is 5-colourable",
    "the sum of the angles of a triangle in Euclidean geometry is 180 degrees",
    "a group of prime order is cyclic",
    "the halting problem is undecidable",
    "every bounded monotone sequence of real numbers converges",
    "the eigenvalues of a real symmetric matrix are real",
]
_PROOF = [
    "Prove that {t}.",
    "Give a rigorous proof that {t}.",
    "Show, step by step and with full justification, that {t}.",
]
_DERIVATIONS = [
    "the heat equation from Fourier's law and conservation of energy",
    "the Euler-Lagrange equation from the principle of stationary action",
    "the closed-form solution of ordinary least squares regression in matrix form",
    "the backpropagation equations for a two-layer neural network with softmax output",
    "the Schwarzschild radius from Newtonian escape velocity and explain why it coincides",
    "the time-independent Schrödinger equation for a particle in a one-dimensional box "
    "and its energy levels",
    "the formula for the variance of a binomial distribution",
    "the Navier-Stokes momentum equation from Newton's second law for a fluid element",
    "the evidence lower bound used in variational autoencoders",
    "the Kalman filter update equations",
]
_DERIVE = ["Derive {d}.", "Starting from scratch, derive {d}, explaining each step."]
_CODE_TASKS = [
    "a thread-safe LRU cache with time-based expiry",
    "a lock-free single-producer single-consumer ring buffer",
    "an interpreter for a small Lisp with closures and tail-call optimisation",
    "a B-tree with insertion, deletion and range queries",
    "Dijkstra's algorithm with a binary heap and path reconstruction",
    "a rate limiter using the token bucket algorithm shared across processes",
    "a regular-expression engine supporting *, +, ? and character classes via NFA simulation",
    "an asynchronous web crawler with politeness delays, retries and deduplication",
    "the Raft consensus algorithm's leader election",
    "a compiler pass that performs constant folding and dead-code elimination on an AST",
]
_CODE_LANGUAGES = ["Python", "C++", "Rust", "Go"]
_CODE = [
    "Implement {c} in {lang}, with tests, and analyse its time and space complexity.",
    "Write production-quality {lang} code for {c}; explain the design and edge cases.",
]
_REASONING = [
    "A company's revenue grew 12% in year one, fell 8% in year two and grew 15% in year "
    "three, while costs grew a steady 5% a year from 70% of initial revenue. In which "
    "year did the profit margin peak, and by how much did it change overall? Show your "
    "work.",
    "Three boxes are labelled apples, oranges and mixed, and every label is wrong. You may "
    "draw one fruit from one box. Explain how to relabel all boxes correctly and prove "
    "your strategy always works.",
    "Design a database schema and indexing strategy for a multi-tenant invoicing system "
    "with audit history, and justify the trade-offs for write-heavy workloads.",
    "Analyse the time complexity of the following recursive algorithm using the master "
    "theorem, then prove the bound by induction: T(n) = 3T(n/4) + n log n.",
    "Compare the causes of the 1929 stock market crash and the 2008 financial crisis, "
    "weighing monetary policy, leverage and regulation, and argue which lessons apply to "
    "today's markets.",
    "Find all real solutions of x^4 - 5x^2 + 4 = 0 and of the system x + y = 7, "
    "xy = 12, then explain the connection between them.",
    "Explain why the CAP theorem forces a trade-off in partitioned distributed databases "
    "and evaluate how Spanner, Dynamo and Cassandra each make it.",
    "A fair coin is tossed until two consecutive heads appear. Compute the expected number "
    "of tosses and derive the full probability generating function.",
    "Solve the recurrence a(n) = 5a(n-1) - 6a(n-2) with a(0) = 1, a(1) = 4 and prove the "
    "closed form correct.",
    "Refactor a 2,000-line monolithic Django view module into services with clear "
    "boundaries; describe the steps, the risks and how to test each stage.",
    "Given a weighted directed graph with negative edges but no negative cycles, design "
    "an algorithm for all-pairs shortest paths faster than Floyd-Warshall on sparse "
    "graphs and prove its correctness.",
    "Estimate, with explicit assumptions and an error analysis, how many piano tuners work "
    "in Chicago.",
]


def easy_prompts() -> list[str]:
    out = list(_GREETINGS)
    for a, b in _NUMBERS:
        out.extend(t.format(a=a, b=b) for t in _ARITHMETIC[: 1 + (a % len(_ARITHMETIC))])
    for (i, phrase), lang in zip(enumerate(_PHRASES), itertools.cycle(_LANGUAGES), strict=False):
        out.append(_TRANSLATE[i % 2].format(p=phrase, lang=lang))
    out.extend(_FACTS)
    return out


def hard_prompts() -> list[str]:
    out = [t.format(t=theorem) for theorem in _THEOREMS for t in _PROOF[:2]]
    out += [t.format(d=d) for d in _DERIVATIONS for t in _DERIVE]
    for (i, task), lang in zip(
        enumerate(_CODE_TASKS), itertools.cycle(_CODE_LANGUAGES), strict=False
    ):
        out.append(_CODE[i % 2].format(c=task, lang=lang))
    out.extend(_REASONING)
    return out


def anchor_data() -> RoutingData:
    """The anchor prompts as routing records (easy: both right; hard: only strong right)."""
    easy, hard = easy_prompts(), hard_prompts()
    prompts = easy + hard
    is_hard = np.asarray([False] * len(easy) + [True] * len(hard))
    return RoutingData(
        prompts=prompts,
        domains=[HARD_DOMAIN if h else EASY_DOMAIN for h in is_hard],
        weak_correct=~is_hard,
        strong_correct=np.ones(len(prompts), dtype=bool),
    )


def concat(first: RoutingData, second: RoutingData) -> RoutingData:
    """Two routing data sets as one (rows of `first`, then `second`)."""
    return RoutingData(
        prompts=first.prompts + second.prompts,
        domains=first.domains + second.domains,
        weak_correct=np.concatenate([first.weak_correct, second.weak_correct]),
        strong_correct=np.concatenate([first.strong_correct, second.strong_correct]),
    )
