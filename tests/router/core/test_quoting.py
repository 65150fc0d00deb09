"""Quotes from passages and the support of an answer: what keeps a source answer truthful."""

from __future__ import annotations

from gearshift.router.core.quoting import quote_answer, support, terms, units
from gearshift.v1 import retriever_pb2

SETTINGS = """The cache serves a hit only after the verifier agrees.

| setting | default | meaning |
|---|---|---|
| `max_false_hit_rate` | 0.10 | the share of wrong hits the cache may serve |
| `ttl_s` | 86400 | how long an entry lives |

Lower max_false_hit_rate serves fewer hits, each more
likely right. Entries are evicted oldest first.
"""


def _passage(text: str, title: str = "Settings") -> retriever_pb2.Passage:
    return retriever_pb2.Passage(
        source="docs", document_id="cache.md", document_title="Cache", chunk_title=title, text=text
    )


def test_units_keep_table_rows_whole_and_join_wrapped_prose() -> None:
    parts = units(SETTINGS)
    assert "| `max_false_hit_rate` | 0.10 | the share of wrong hits the cache may serve |" in parts
    assert "Lower max_false_hit_rate serves fewer hits, each more likely right." in parts
    assert not any(set(p) <= set("|-: ") for p in parts), "table rules are not quotable"


def test_the_quote_is_the_passage_line_that_answers_cited_by_number() -> None:
    answer = quote_answer("How do I set the maximum false hit rate?", [_passage(SETTINGS)])
    assert answer.startswith("From Cache > Settings [1]:")
    assert "max_false_hit_rate` | 0.10" in answer
    assert all(line.startswith("> ") for line in answer.splitlines()[2:])


def test_a_heading_path_that_starts_with_the_document_title_is_not_repeated() -> None:
    passage = _passage(SETTINGS, title="Cache > Settings")
    answer = quote_answer("What is the default false hit rate?", [passage])
    assert answer.startswith("From Cache > Settings [1]:"), answer


def test_only_the_best_ranked_passage_is_quoted() -> None:
    other = _passage("The proxy keeps provider keys in a Secret.", "Proxy")
    answer = quote_answer("Where does the proxy keep keys?", [_passage(SETTINGS), other])
    assert "[1]" in answer and "Secret" not in answer


def test_a_passage_that_shares_no_word_with_the_question_is_not_passed_off_as_an_answer() -> None:
    answer = quote_answer("Which GPUs does vLLM support?", [_passage(SETTINGS)])
    assert "do not clearly answer" in answer and "[1]" in answer
    assert quote_answer("anything", []) == "The data source returned no passages for this question."


def test_support_is_the_share_of_the_answers_words_found_in_the_passages() -> None:
    passages = [_passage(SETTINGS)]
    assert support("Set max_false_hit_rate; the default is 0.10 [1].", passages) == 1.0
    invented = support("#define MAX_FALSE_HIT_RATE 100 in cache.h", passages)
    assert invented < 0.8, invented
    assert support("", passages) == 1.0  # nothing claimed
    assert "100" in terms("rate 100") and "max_false_hit_rate" in terms("max_false_hit_rate")
