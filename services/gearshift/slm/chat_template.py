"""Turns a conversation into prompt token ids with the model's own chat template.

The model folder defines how turns are marked up (`chat_template.jinja` or the
tokenizer config); rendering it through the tokenizer keeps the server faithful to
what the model was trained on. The server tokenizes the prompt itself (rather than
letting the engine do it) because it needs the token count before admitting the
request: an oversize prompt is refused with both counts, and max_tokens is clipped
to what fits.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Protocol

from gearshift.runtime.errors import FailedPrecondition
from gearshift.v1 import common_pb2


class ChatTokenizer(Protocol):
    """The part of a Hugging Face tokenizer the server uses."""

    chat_template: Any

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...

    def encode(self, text: str, **kwargs: Any) -> list[int]: ...


def to_template_messages(messages: Sequence[common_pb2.ChatMessage]) -> list[dict[str, Any]]:
    """Proto messages as the dicts chat templates expect (`name` only when given).

    Tool calls go in OpenAI's shape with the arguments as a mapping, which is what tool-aware
    templates (Hermes, Qwen, Llama 3) iterate over; templates without tool support ignore them.
    """
    out: list[dict[str, Any]] = []
    for msg in messages:
        turn: dict[str, Any] = {"role": msg.role, "content": msg.content}
        if msg.name:
            turn["name"] = msg.name
        if msg.tool_call_id:
            turn["tool_call_id"] = msg.tool_call_id
        if msg.tool_calls:
            turn["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": _arguments(call.arguments)},
                }
                for call in msg.tool_calls
            ]
        out.append(turn)
    return out


def _arguments(text: str) -> Any:
    try:
        return json.loads(text) if text else {}
    except ValueError:
        return text


def render_prompt(
    tokenizer: ChatTokenizer,
    messages: Sequence[common_pb2.ChatMessage],
    tools: Sequence[dict[str, Any]] | None = None,
) -> str:
    """The prompt text: the conversation in the model's template, ready for the answer."""
    if not getattr(tokenizer, "chat_template", None):
        raise FailedPrecondition(
            "the served model has no chat template; add chat_template.jinja to its folder",
            reason="NO_CHAT_TEMPLATE",
        )
    kwargs: dict[str, Any] = {"tools": list(tools)} if tools else {}
    text = tokenizer.apply_chat_template(
        to_template_messages(messages), tokenize=False, add_generation_prompt=True, **kwargs
    )
    return str(text)


def prompt_token_ids(
    tokenizer: ChatTokenizer,
    messages: Sequence[common_pb2.ChatMessage],
    tools: Sequence[dict[str, Any]] | None = None,
) -> list[int]:
    """Token ids of the rendered prompt.

    The template already writes every special token the model expects, so the
    tokenizer must not add its own (a doubled BOS changes answers).
    """
    prompt = render_prompt(tokenizer, messages, tools)
    return list(tokenizer.encode(prompt, add_special_tokens=False))
