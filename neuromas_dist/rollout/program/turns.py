"""Token in, token out across the turns of one agent's conversation.

A program that continues a conversation sends the agent's earlier reply back as an
assistant message. Rendering that text through the chat template again would give the
model tokens it never produced (a reply's text does not always encode back to the ids
that were sampled, and templates rewrite earlier turns, e.g. Qwen3 drops their thinking
block), and the learner would score a prompt the agent was never in. So a continued
conversation's prompt is built from the earlier call's own ids:

    earlier prompt ids + earlier response ids + the turn's closing tokens + the new messages

where the closing tokens and the new messages are what the template writes after the
earlier reply. When the template does not extend the earlier conversation as a prefix,
the prompt is the plain template's and the call is counted as re-tokenised.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Sequence

from neuromas_dist.graph.prompts import chat_text, encode
from neuromas_dist.rollout.calls import NodeCall

Messages = Sequence[Mapping[str, str]]


class Turn(NamedTuple):
    """An earlier call of an agent: the messages it was sent and what it did."""

    messages: tuple[tuple[str, str], ...]  # (role, content) pairs
    call: NodeCall


def as_pairs(messages: Messages) -> tuple[tuple[str, str], ...]:
    return tuple((m["role"], m["content"]) for m in messages)


def prompt_ids(tokenizer: Any, messages: Messages, earlier: Sequence[Turn], thinking: bool) -> tuple[list[int], bool]:
    """(prompt ids, re-tokenised) for ``messages`` to an agent whose earlier calls are ``earlier``.
    Re-tokenised: the messages carry an earlier reply of the agent that could not be spliced."""
    pairs = as_pairs(messages)
    replied = False
    for turn in reversed(earlier):
        j = len(turn.messages)
        if len(pairs) > j + 1 and pairs[:j] == turn.messages and pairs[j] == ("assistant", turn.call.text):
            replied = True
            ids = _spliced(tokenizer, messages, j, turn.call, thinking)
            if ids is not None:
                return ids, False
    return encode(tokenizer, chat_text(tokenizer, messages, thinking)), replied


def _spliced(tokenizer: Any, messages: Messages, j: int, call: NodeCall, thinking: bool) -> list[int] | None:
    """The earlier call's ids, its reply's ids, then the template's text after that reply;
    None when the template's rendering of ``messages`` does not extend the earlier turn."""
    closed = chat_text(tokenizer, messages[:j + 1], thinking, generation_prompt=False)
    full = chat_text(tokenizer, messages, thinking)
    # what the template writes after a reply (e.g. "<|im_end|>\n"), found by a reply no text contains
    marked = chat_text(tokenizer, [*messages[:j], {"role": "assistant", "content": _MARK}], thinking,
                       generation_prompt=False)
    if not call.response_ids or _MARK not in marked or not full.startswith(closed):
        return None
    closing = marked[marked.rindex(_MARK) + len(_MARK):]
    last = tokenizer.decode(call.response_ids[-1:], skip_special_tokens=False)
    if call.finish_reason == "stop" and last and closing.startswith(last):
        closing = closing[len(last):]  # the sampled end-of-turn token is kept as sampled
    return [*call.prompt_ids, *call.response_ids, *encode(tokenizer, closing), *encode(tokenizer, full[len(closed):])]


_MARK = "\u2063reply\u2063"  # invisible separators around a word: in no template's own text
