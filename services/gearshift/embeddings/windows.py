"""Long texts: split at token boundaries into windows the model can see whole.

all-MiniLM-L6-v2 reads at most 256 word pieces and silently drops the rest, so a long
prompt whose question comes after a passage (a reading-comprehension item, a RAG prompt
with its retrieved context first) would be embedded from the passage alone: two prompts
with the same context and different questions get cosine 1.0, and the scorer never sees
the question. Embedding every window and averaging makes the whole text count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_WINDOWS = 8  # head, tail and evenly spaced middle windows of very long texts


@dataclass(frozen=True)
class Window:
    text: str
    tokens: int


def split_into_windows(
    text: str, tokenizer: Any, window_tokens: int, max_windows: int = MAX_WINDOWS
) -> list[Window]:
    """`text` cut into consecutive pieces of at most `window_tokens` word pieces.

    Short texts come back whole without tokenising: a word piece covers at least one
    character, so a text of at most `window_tokens` characters always fits. Beyond
    `max_windows`, the first and last windows are kept with evenly spaced ones between,
    which bounds the cost of a huge prompt while still reading its start and its end.
    """
    if len(text) <= window_tokens:
        return [Window(text, window_tokens)]
    offsets: Sequence[tuple[int, int]] = tokenizer(
        text,
        add_special_tokens=False,
        return_offsets_mapping=True,
        truncation=False,
        verbose=False,  # the "longer than the maximum" warning is what we are handling
    )["offset_mapping"]
    n = len(offsets)
    if n <= window_tokens:
        return [Window(text, n)]
    starts = list(range(0, n, window_tokens))
    if len(starts) > max_windows:
        picks = np.linspace(0, len(starts) - 1, max_windows).round().astype(int)
        starts = [starts[i] for i in sorted(set(picks.tolist()))]
    windows = []
    for start in starts:
        end = min(start + window_tokens, n)
        windows.append(Window(text[offsets[start][0] : offsets[end - 1][1]], end - start))
    return windows
