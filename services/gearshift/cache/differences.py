"""Real differences between two texts that make a cached answer wrong, with a name each.

An embedding puts "Retry up to three times" and "Retry up to five times" at cosine
0.98: whatever the similarity, a different number, a negation on one side only,
opposite words or a different name is a different request. These checks are the
stated reasons the cache gives when it refuses a near candidate (and the only
reasons it may pass over a nearer candidate for a farther one). They look at words
only, so they hold for questions, statements and instructions alike.
"""

from __future__ import annotations

import re
from collections import Counter
from itertools import pairwise

from gearshift.cache.features import (
    ANTONYMS,
    NEGATIONS,
    STOPWORDS,
    _is_opposite,
    _numbers,
    _stem,
    _words,
)

# Spelled-out numbers are numbers: "three times" and "3 times" are the same, "five"
# differs. "one" is left out: "one orbit" and "an orbit" say the same.
NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        "zero _ two three four five six seven eight nine ten eleven twelve".split()
    )
    if w != "_"
} | {
    "twenty": "20",
    "thirty": "30",
    "forty": "40",
    "fifty": "50",
    "sixty": "60",
    "seventy": "70",
    "eighty": "80",
    "ninety": "90",
    "hundred": "100",
    "thousand": "1000",
    "million": "1000000",
    "billion": "1000000000",
    "half": "1/2",
    "third": "1/3",
    "quarter": "1/4",
    "twice": "x2",
    "double": "x2",
}
# Units of time or size: "every hour" and "every day" differ when both sides name one.
UNITS = {
    "second": "second",
    "minute": "minute",
    "hour": "hour",
    "day": "day",
    "daily": "day",
    "night": "day",
    "nightly": "day",
    "week": "week",
    "weekly": "week",
    "month": "month",
    "monthly": "month",
    "year": "year",
    "yearly": "year",
    "annual": "year",
    "kb": "kb",
    "mb": "mb",
    "gb": "gb",
    "tb": "tb",
}
# Comparatives and superlatives whose opposite the antonym list does not name.
_MORE_OPPOSITES = [
    ("enable", "disable"),
    ("enabled", "disabled"),
    ("allow", "forbid"),
    ("show", "hide"),
    ("lock", "unlock"),
    ("install", "uninstall"),
    ("mount", "unmount"),
    ("connect", "disconnect"),
    ("older", "newer"),
    ("oldest", "newest"),
    ("higher", "lower"),
    ("highest", "lowest"),
    ("raise", "lower"),
    ("raises", "lowers"),
    ("warmer", "colder"),
    ("warmest", "coldest"),
    ("hottest", "coldest"),
    ("larger", "smaller"),
    ("largest", "smallest"),
    ("bigger", "smaller"),
    ("biggest", "smallest"),
    ("longer", "shorter"),
    ("faster", "slower"),
    ("earlier", "later"),
    ("more", "fewer"),
    ("accept", "decline"),
    ("ascending", "descending"),
    ("input", "output"),
    ("request", "response"),
    ("into", "out"),
    ("to", "from"),
    ("serialize", "deserialize"),
    ("compress", "decompress"),
]
_EXTRA_OPPOSITES = frozenset(frozenset(p) for p in _MORE_OPPOSITES) | frozenset(
    frozenset((_stem(a), _stem(b))) for a, b in _MORE_OPPOSITES
)
# Time units in seconds, so "24 hours" and "a day", "seven days" and "a week" compare
# equal (a month and a year are taken as 30 and 365 days).
SECONDS = {
    "second": 1,
    "minute": 60,
    "hour": 3600,
    "day": 86400,
    "week": 7 * 86400,
    "fortnight": 14 * 86400,
    "month": 30 * 86400,
    "year": 365 * 86400,
}
# Words that stand for one of the unit that follows ("a day", "per minute", "every week").
_ONE_OF = frozenset({"a", "an", "one", "per", "every", "each"})
# Words that say "not" without a negation word: "the snapshot is missing" is "there is no
# snapshot", "turn off verbose logging" is "run without verbose logging". Compared by
# root, so "remove" on one side and "not removing" on the other is still a negation.
IMPLICIT_NEGATIVES = frozenset(
    """absent absence avoid block decline deny disable drop exclude fail forbid ignore lack
    miss missing off omit prevent refuse reject remove skip stop unavailable""".split()
)
_PRIVATIVE_PREFIXES = ("un", "dis", "in", "im", "non", "il", "ir")
# Comparatives that reverse the comparison: "iron conducts less well than gold" says what
# "gold is a better conductor than iron" says, with the sides of "than" exchanged.
REVERSING_COMPARATIVES = frozenset({"less", "fewer", "worse", "lower", "smaller", "shorter"})


_NUMBER_IN_TEXT = re.compile(r"\d+(?:[.,]\d+)?")  # as `features._numbers` reads them


def _amount(word: str) -> str | None:
    if word.isdigit():
        return word
    value = NUMBER_WORDS.get(word)
    return value if value is not None and value.isdigit() else None


def _is_amount_word(*words: str) -> bool:
    """Every word names an amount or a time unit ("two", "both", "a", "day", "24")."""
    return all(
        w.isdigit() or w in NUMBER_WORDS or w in _ONE_OF or w == "both" or _time_unit(w)
        for w in words
    )


def _time_unit(word: str) -> int | None:
    for form in (word, _stem(word), word.rstrip("s")):
        if form in SECONDS:
            return SECONDS[form]
    return None


def _spelled_amounts(words: list[str], text: str) -> tuple[frozenset[str], frozenset[str]]:
    """(quantities, units) with "N <time unit>" and "a <time unit>" as a number of seconds
    and "both" as 2: the same amount however it is spelled."""
    quantities: set[str] = set()
    used: set[int] = set()
    counted: Counter[str] = Counter()
    for i, word in enumerate(words):
        seconds = _time_unit(word)
        if seconds is None or i == 0:
            continue
        before = words[i - 1]
        count = 1 if before in _ONE_OF else _amount(before)
        if count is not None:
            quantities.add(f"{int(count) * seconds}s")
            used.update((i - 1, i))
            if before.isdigit():
                counted[before] += 1
    rest = [w for i, w in enumerate(words) if i not in used]
    # Numbers as written ("4.4.2", "K2"), less those read as a duration's count.
    written = Counter(n.replace(",", "") for n in _NUMBER_IN_TEXT.findall(text))
    quantities |= set((written - counted).keys())
    quantities |= {NUMBER_WORDS[w] for w in rest if w in NUMBER_WORDS}
    if "both" in rest:
        quantities.add("2")
    return frozenset(quantities), frozenset(_units(rest))


def _negation_said_otherwise(negated: list[str], other: list[str]) -> set[str] | None:
    """The side without a negation word says "not" another way (see IMPLICIT_NEGATIVES),
    with a privative prefix ("unused" / "not used"), as "read-only" ("without write
    access"), or as a superlative ("the highest mountain" / "no mountain is higher than").

    Returns the words that carry the negation (a prefixed word and its base are not also
    "opposite words"), or None when the negation is said on one side only.
    """
    negated_roots = {_root(w) for w in negated}
    other_only = [w for w in other if _root(w) not in negated_roots]
    implicit = {_root(w) for w in IMPLICIT_NEGATIVES}
    if any(_root(w) in implicit for w in other_only):
        return set()
    for word in other_only:
        for prefix in _PRIVATIVE_PREFIXES:
            base = word[len(prefix) :]
            if word.startswith(prefix) and len(base) >= 3 and _root(base) in negated_roots:
                return {word} | {w for w in negated if _root(w) == _root(base)}
    read_only = [("read", "only") == pair for pair in pairwise(other)]
    if any(read_only) and not any(("read", "only") == pair for pair in pairwise(negated)):
        return set()
    if "than" in negated:
        at = negated.index("than")
        # "no mountain rises higher above sea level than": the comparative a few words back
        comparative = any(w == "more" or w.endswith("er") for w in negated[max(0, at - 4) : at])
        superlative = any(w == "most" or (w.endswith("est") and len(w) > 4) for w in other)
        if comparative and superlative:
            return set()
    return None


def _converse(wq: list[str], wc: list[str]) -> bool:
    """The sides of "than" exchanged together with a reversed comparison ("less" on one
    side only, or opposite comparatives: "faster" / "slower"): the same comparison seen
    from the other side."""
    if _crossed(wq, wc) != "than":
        return False
    sq, sc = set(wq), set(wc)
    if bool(REVERSING_COMPARATIVES & sq) != bool(REVERSING_COMPARATIVES & sc):
        return True
    return _opposite(sq - sc, sc - sq) is not None


# A name: a capitalised word not at the start of a sentence, or a word with a digit,
# a dot or an inner capital (PostgreSQL, nvidia.com, utcnow3, IPv4).
_NAME = re.compile(r"(?<![.?!:]\s)(?<!^)\b([A-Z][\w.-]*[\w])|\b(\w*[a-z][A-Z0-9][\w.]*)")


def _root(word: str) -> str:
    """A rough word root: "validating" / "validate" / "validated" all give "validat"."""
    root = word
    for suffix in ("ing", "ed", "es", "s", "ly"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            root = word[: -len(suffix)]
            break
    if len(root) > 3 and root[-1] == root[-2]:
        root = root[:-1]  # "running" -> "runn" -> "run"
    return root.rstrip("e") or root


def _quantities(words: list[str], text: str) -> set[str]:
    return _numbers(text) | {NUMBER_WORDS[w] for w in words if w in NUMBER_WORDS}


def _units(words: list[str]) -> set[str]:
    return {UNITS[_stem(w)] for w in words if _stem(w) in UNITS} | {
        UNITS[w] for w in words if w in UNITS
    }


def _content_roots(words: list[str]) -> list[str]:
    return [_root(w) for w in words if w not in STOPWORDS]


def _swapped(rq: list[str], rc: list[str]) -> tuple[str, str] | None:
    """Two words that trade places, all else in order ("from English into French").

    Only an exact exchange of two words counts: moved clauses, passives and dative
    shifts ("send the team the report") reorder more than two words and keep the
    meaning.
    """
    if len(rq) != len(rc):
        return None
    diff = [i for i, (x, y) in enumerate(zip(rq, rc, strict=True)) if x != y]
    if len(diff) == 2:
        i, j = diff
        if rq[i] == rc[j] and rq[j] == rc[i]:
            return rq[i], rq[j]
    return None


# Words that order two things: what stands on which side of them matters.
ORDER_MARKERS = ("before", "after", "than", "to", "into", "from", "over", "instead", "vs", "versus")


def _sides(words: list[str], marker: str) -> tuple[set[str], set[str]]:
    at = words.index(marker)
    return set(_content_roots(words[:at])), set(_content_roots(words[at + 1 :]))


def _crossed(wq: list[str], wc: list[str]) -> str | None:
    """Things that change sides around an ordering word ("save before validating" /
    "validate before saving", "euros to dollars" / "dollars to euros")."""
    for marker in ORDER_MARKERS:
        if wq.count(marker) != 1 or wc.count(marker) != 1:
            continue
        lq, rq = _sides(wq, marker)
        lc, rc = _sides(wc, marker)
        if (lq & rc) - lc and (rq & lc) - rc:
            return marker
    return None


def _substituted(rq: list[str], rc: list[str]) -> tuple[str, str] | None:
    """Two texts identical but for one word in the same place ("pie chart" / "bar chart")."""
    if len(rq) != len(rc) or len(rq) < 3:
        return None
    diff = [(x, y) for x, y in zip(rq, rc, strict=True) if x != y]
    if len(diff) == 1:
        return diff[0]
    return None


def _names(text: str) -> set[str]:
    found = set()
    for a, b in _NAME.findall(text.strip()):
        found.add((a or b).lower())
    return found


def _opposite(only_q: set[str], only_c: set[str]) -> tuple[str, str] | None:
    for x in only_q:
        for y in only_c:
            stems = frozenset((_stem(x), _stem(y)))
            if stems in _EXTRA_OPPOSITES or stems in ANTONYMS or _is_opposite(x, y):
                return x, y
    return None


def real_difference(q: str, c: str, question_pair: bool = False) -> str:
    """Why `c` cannot stand for `q` ("" when no such difference is seen).

    Each check needs the difference on both sides or a one-sided negation, so a
    paraphrase that merely adds a word is not refused for it. Other text (statements,
    instructions) also gets the equivalences that keep true paraphrases: amounts spelled
    differently ("24 hours" / "a day"), a negation said without a negation word ("no
    longer uses" / "remove"), a comparison seen from its other side. A question pair
    (both sides questions: the verifier's domain) gets the checks the verifier itself
    vetoes on (numbers, units, a one-sided negation, opposite words), strictly; the
    trees judge word order, replaced words and names.
    """
    wq, wc = _words(q), _words(c)
    sq, sc = set(wq), set(wc)
    nq, nc = _quantities(wq, q), _quantities(wc, c)
    uq, uc = _units(wq), _units(wc)
    numbers_differ = nq != nc
    units_differ = bool(uq and uc and uq != uc)
    amounts_alike = False
    if (
        not question_pair
        and (numbers_differ or units_differ or bool({"both"} & (sq ^ sc)))
        and _spelled_amounts(wq, q) == _spelled_amounts(wc, c)
    ):
        numbers_differ = units_differ = False  # "24 hours" / "a day", "two" / "both"
        amounts_alike = True
    if numbers_differ:
        shown = " / ".join(", ".join(sorted(s)) or "none" for s in (nq, nc))
        return f"different numbers ({shown})"
    if units_differ:
        return f"different units ({', '.join(sorted(uq))} / {', '.join(sorted(uc))})"
    negated_q, negated_c = bool(sq & NEGATIONS), bool(sc & NEGATIONS)
    carriers: set[str] = set()  # the words that say "not" without a negation word
    if negated_q != negated_c:
        negated, other = (wq, wc) if negated_q else (wc, wq)
        said = None if question_pair else _negation_said_otherwise(negated, other)
        if said is None:
            return "a negation on one side only"
        carriers = said
    if not question_pair and _converse(wq, wc):
        return ""
    pair = _opposite(sq - sc - carriers, sc - sq - carriers)
    if pair is not None:
        return f"opposite words ({pair[0]} / {pair[1]})"
    if question_pair:
        # Word order, a replaced word and names are among the trees' features, weighed on
        # labelled question pairs; as hard refusals they cost duplicates ("How do you
        # become a dentist?" / "How do I become a dentist?") at no precision gain.
        return ""
    rq, rc = _content_roots(wq), _content_roots(wc)
    swap = _swapped(rq, rc)
    if swap is not None:
        return f"two words trade places ({swap[0]} / {swap[1]})"
    marker = _crossed(wq, wc)
    if marker is not None:
        return f"the two sides of '{marker}' are exchanged"
    substitution = _substituted(rq, rc)
    if substitution is not None and not (amounts_alike and _is_amount_word(*substitution)):
        return f"one word replaced ({substitution[0]} / {substitution[1]})"
    # A name on each side that the other side does not mention: a changed entity.
    only_q = {n for n in _names(q) - STOPWORDS if n not in c.lower()}
    only_c = {n for n in _names(c) - STOPWORDS if n not in q.lower()}
    if only_q and only_c:
        return f"different names ({', '.join(sorted(only_q))} / {', '.join(sorted(only_c))})"
    return ""
