"""Turns a conversation into prompt token ids with the model's own chat template.

The model folder defines how turns are marked up (`chat_template.jinja` or the
tokenizer config); rendering it through the tokenizer keeps the server faithful to
what the model was trained on. The server tokenizes the prompt itself (rather than
letting the engine do it) because it needs the token count before admitting the
request: an oversize prompt is refused with both counts, and max_tokens is clipped
to what fits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from gearshift.runtime.errors import FailedPrecondition
from gearshift.v1 import common_pb2


class ChatTokenizer(Protocol):
    """The part of a Hugging Face tokenizer the server uses."""

    chat_template: Any

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...

    def encode(self, text: str, **kwargs: Any) -> list[int]: ...


def to_template_messages(messages: Sequence[common_pb2.ChatMessage]) -> list[dict[str, str]]:
    """Proto messages as the dicts chat templates expect (`name` only when given)."""
    out: list[dict[str, str]] = []
    for msg in messages:
        turn = {"role": msg.role, "content": msg.content}
        if msg.name:
            turn["name"] = msg.name
        out.append(turn)
    return out


def render_prompt(tokenizer: ChatTokenizer, messages: Sequence[common_pb2.ChatMessage]) -> str:
    """The prompt text: the conversation in the model's template, ready for the answer."""
    if not getattr(tokenizer, "chat_template", None):
        raise FailedPrecondition(
            "the served model has no chat template; add chat_template.jinja to its folder",
            reason="NO_CHAT_TEMPLATE",
        )
    text = tokenizer.apply_chat_template(
        to_template_messages(messages), tokenize=False, add_generation_prompt=True
    )
    return str(text)


def prompt_token_ids(
    tokenizer: ChatTokenizer, messages: Sequence[common_pb2.ChatMessage]
) -> list[int]:
    """Token ids of the rendered prompt.

    The template already writes every special token the model expects, so the
    tokenizer must not add its own (a doubled BOS changes answers).
    """
    return list(tokenizer.encode(render_prompt(tokenizer, messages), add_special_tokens=False))
