"""Pair features the verifier judges a (question, cached question) pair by.

Cosine similarity alone cannot tell "enable 2FA" from "disable 2FA", nor "best
laptop under $500" from "best laptop under $1000": the embeddings of such pairs are
very close. These features name exactly what a wrong hit usually differs in --
numbers, negations, opposite words, names, question words, swapped word order
("dollars to rupees" / "rupees to dollars"), and how rare the words are that only
one side has -- next to how similar the two embeddings are.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
_CAPITAL = re.compile(r"(?<![.?!]\s)(?<!^)\b([A-Z][a-zA-Z0-9]+)")

STOPWORDS = frozenset(
    """a an the is are was were be been being am do does did i me my we our you your he she
    it its they them their what which who whom whose why how when where this that these those
    of in on at to for from by with about as into than then so and or but if can could would
    should will shall may might must have has had there here some any one s t just get""".split()
)
NEGATIONS = frozenset(
    "not no never none nothing nobody neither nor without cannot can't don't doesn't didn't "
    "isn't aren't wasn't weren't won't wouldn't shouldn't couldn't haven't hasn't hadn't "
    "n't".split()
)
QUESTION_WORDS = ("what", "why", "how", "when", "where", "who", "which", "whose", "is", "can")
_OPPOSITE_PREFIXES = ("dis", "un", "in", "im", "il", "ir", "non", "de", "anti", "counter")
_ANTONYMS = [
    ("increase", "decrease"),
    ("best", "worst"),
    ("good", "bad"),
    ("buy", "sell"),
    ("before", "after"),
    ("pros", "cons"),
    ("open", "close"),
    ("start", "stop"),
    ("win", "lose"),
    ("more", "less"),
    ("max", "min"),
    ("maximum", "minimum"),
    ("up", "down"),
    ("add", "remove"),
    ("love", "hate"),
    ("true", "false"),
    ("rich", "poor"),
    ("male", "female"),
    ("men", "women"),
    ("man", "woman"),
    ("boy", "girl"),
    ("old", "new"),
    ("first", "last"),
    ("cheap", "expensive"),
    ("import", "export"),
    ("on", "off"),
    ("easy", "hard"),
    ("easy", "difficult"),
    ("positive", "negative"),
    ("accept", "reject"),
    ("allow", "deny"),
    ("allow", "block"),
    ("encrypt", "decrypt"),
    ("upgrade", "downgrade"),
    ("push", "pull"),
    ("high", "low"),
    ("long", "short"),
    ("fast", "slow"),
    ("big", "small"),
    ("large", "small"),
    ("gain", "lose"),
    ("win", "loss"),
    ("advantage", "disadvantage"),
    ("send", "receive"),
    ("upload", "download"),
    ("enter", "exit"),
    ("in", "out"),
    ("above", "below"),
    ("over", "under"),
    ("hot", "cold"),
    ("success", "failure"),
    ("happy", "sad"),
    ("strong", "weak"),
    ("young", "old"),
    ("birth", "death"),
    ("pass", "fail"),
    ("include", "exclude"),
    ("inside", "outside"),
    ("most", "least"),
    ("north", "south"),
    ("east", "west"),
    ("light", "dark"),
    ("day", "night"),
    ("mac", "windows"),
    ("android", "ios"),
    ("iphone", "android"),
    ("girlfriend", "boyfriend"),
    ("husband", "wife"),
    ("he", "she"),
    ("his", "her"),
]
ANTONYMS = frozenset(frozenset(p) for p in _ANTONYMS)

FEATURE_NAMES = (
    "cosine",
    "jaccard",
    "content_jaccard",
    "containment",
    "len_ratio",
    "len_diff_words",
    "diff_content_words",
    "number_mismatch",
    "number_any",
    "negation_mismatch",
    "opposite_words",
    "capital_mismatch",
    "question_word_mismatch",
    "first_word_same",
    "last_word_same",
    "bigram_jaccard",
    "char3_jaccard",
    "cosine_x_jaccard",
    "unmatched_idf_sum",
    "unmatched_idf_max_side",
    "unmatched_idf_min_side",
    "unmatched_idf_share",
    "unmatched_idf_max",
    "unmatched_words",
    "unmatched_words_max_side",
    "unmatched_words_min_side",
    "stopword_diff",
    "order_discordance",
    "order_swapped",
)
N_FEATURES = len(FEATURE_NAMES)


@dataclass(frozen=True)
class IdfTable:
    """Inverse document frequency of word stems, fitted on the training questions.

    A pair that differs only in "the" and "a" is the same question; one that differs
    in "Democratic" or "IT" usually is not. Rare words weigh more; a word the table
    never saw weighs `default` (the weight of a word seen once).
    """

    weights: Mapping[str, float] = field(default_factory=dict)
    default: float = 1.0

    def __call__(self, stem: str) -> float:
        return self.weights.get(stem, self.default)

    def to_arrays(self) -> dict[str, npt.NDArray[Any]]:
        """The table as the arrays the verifier's weights file stores."""
        words = sorted(self.weights)
        return {
            "idf_words": np.array(words),
            "idf_values": np.array([self.weights[w] for w in words], dtype=np.float32),
            "idf_default": np.array(self.default),
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, npt.NDArray[Any]]) -> IdfTable:
        """The table back from `to_arrays` (an open .npz or a dict)."""
        words = (str(w) for w in arrays["idf_words"])
        weights = dict(zip(words, arrays["idf_values"].tolist(), strict=True))
        return cls(weights, default=float(arrays["idf_default"]))


def _order_discordance(wq: list[str], wc: list[str], shared: set[str]) -> float:
    """Share of shared-word pairs whose order differs between the two questions."""
    once = [w for w in wq if w in shared and wq.count(w) == 1 and wc.count(w) == 1]
    position = {w: wc.index(w) for w in once}
    pairs = discordant = 0
    for x, y in itertools.combinations(once, 2):
        pairs += 1
        discordant += position[x] > position[y]
    return discordant / pairs if pairs else 0.0


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower().replace("\u2019", "'"))


def _jaccard(a: set[str] | frozenset[str], b: set[str] | frozenset[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s", "ly"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def _is_opposite(x: str, y: str) -> bool:
    if frozenset((x, y)) in ANTONYMS:
        return True
    for a, b in ((x, y), (y, x)):
        if len(b) < 4:  # "in" + "to" is "into", not the opposite of "to"
            continue
        for prefix in _OPPOSITE_PREFIXES:
            if a == prefix + b or _stem(a) == prefix + _stem(b):
                return True
    return False


def _numbers(text: str) -> set[str]:
    return {n.replace(",", "") for n in _NUMBER.findall(text)}


def _capitals(text: str) -> set[str]:
    return {c.lower() for c in _CAPITAL.findall(text.strip())}


def pair_features(q: str, c: str, cosine: float, idf: IdfTable) -> npt.NDArray[np.float32]:
    """Symmetric features of a pair of questions plus their embedding cosine."""
    wq, wc = _words(q), _words(c)
    stems_q, stems_c = [_stem(w) for w in wq], [_stem(w) for w in wc]
    ssq, ssc = set(stems_q), set(stems_c)
    unmatched_q = [idf(w) for w in ssq - ssc if w not in STOPWORDS]
    unmatched_c = [idf(w) for w in ssc - ssq if w not in STOPWORDS]
    idf_q, idf_c = sum(unmatched_q), sum(unmatched_c)
    idf_all = sum(idf(w) for w in (ssq | ssc) - STOPWORDS) or 1.0
    discordance = _order_discordance(stems_q, stems_c, (ssq & ssc) - STOPWORDS)
    sq, sc = set(wq), set(wc)
    cq = {_stem(w) for w in sq - STOPWORDS - NEGATIONS}
    cc = {_stem(w) for w in sc - STOPWORDS - NEGATIONS}
    jac = _jaccard(sq, sc)
    only_q, only_c = sq - sc, sc - sq
    opposite = any(_is_opposite(x, y) for x in only_q for y in only_c)
    nq, nc = _numbers(q), _numbers(c)
    negq, negc = len(sq & NEGATIONS) > 0, len(sc & NEGATIONS) > 0
    capq, capc = _capitals(q), _capitals(c)
    qwq = next((w for w in wq if w in QUESTION_WORDS), "")
    qwc = next((w for w in wc if w in QUESTION_WORDS), "")
    bq = set(itertools.pairwise(wq))
    bc = set(itertools.pairwise(wc))
    tq, tc = q.lower(), c.lower()
    gq = {tq[i : i + 3] for i in range(max(len(tq) - 2, 0))}
    gc = {tc[i : i + 3] for i in range(max(len(tc) - 2, 0))}
    lq, lc = max(len(wq), 1), max(len(wc), 1)
    small = min(len(cq), len(cc))
    return np.array(
        [
            cosine,
            jac,
            _jaccard(cq, cc),
            len(cq & cc) / small if small else 1.0,
            min(lq, lc) / max(lq, lc),
            min(abs(lq - lc), 20) / 20.0,
            min(len(cq ^ cc), 10) / 10.0,
            float(nq != nc),
            float(bool(nq or nc)),
            float(negq != negc),
            float(opposite),
            min(len(capq ^ capc), 5) / 5.0,
            float(qwq != qwc),
            float(bool(wq and wc and wq[0] == wc[0])),
            float(bool(wq and wc and wq[-1] == wc[-1])),
            _jaccard(set(map(" ".join, bq)), set(map(" ".join, bc))),
            _jaccard(gq, gc),
            cosine * jac,
            idf_q + idf_c,
            max(idf_q, idf_c),
            min(idf_q, idf_c),
            (idf_q + idf_c) / idf_all,
            max(unmatched_q + unmatched_c, default=0.0),
            len(unmatched_q) + len(unmatched_c),
            max(len(unmatched_q), len(unmatched_c)),
            min(len(unmatched_q), len(unmatched_c)),
            len((sq ^ sc) & STOPWORDS),
            discordance,
            float(discordance > 0),
        ],
        dtype=np.float32,
    )


def batch_features(
    qs: Sequence[str], cs: Sequence[str], cosines: Sequence[float], idf: IdfTable
) -> npt.NDArray[np.float32]:
    """Features of many pairs as an (n, N_FEATURES) array."""
    if not qs:
        return np.zeros((0, N_FEATURES), dtype=np.float32)
    return np.stack(
        [pair_features(q, c, float(s), idf) for q, c, s in zip(qs, cs, cosines, strict=True)]
    )


def fit_idf(questions: Sequence[str], min_count: int = 2) -> IdfTable:
    """IDF of every stem seen in at least `min_count` questions (rarer ones get the default)."""
    counts: dict[str, int] = {}
    for question in questions:
        for stem in {_stem(w) for w in _words(question)}:
            counts[stem] = counts.get(stem, 0) + 1
    n = len(questions)
    # Rounded to float32 as stored, so training sees exactly the features serving does.
    weights = {
        w: float(np.float32(np.log((n + 1) / (k + 1)))) for w, k in counts.items() if k >= min_count
    }
    return IdfTable(weights, default=float(np.float32(np.log((n + 1) / 2))))
