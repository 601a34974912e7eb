"""Role-free, structure-aware node prompts.

A node is told the question, where it sits in the graph (1-based, for humans), whom
it reads and who reads it, and the text of its upstream nodes labelled by position.
It is never given a semantic role: any specialisation has to emerge from joint
training, which is the point of NeuroMAS. Only the sink is told the answer format,
because only its text is scored.

The fixed wording lives in the module-level templates below so that it can be read
(and scanned for role words by the tests) in one place. It is deliberately terse: the
local test model has a context of about 512 tokens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from neuromas_dist.graph.topology import Topology, TopologyError, parse_node_name

QUESTION_TEMPLATE = "Question: {question}"
POSITION_TEMPLATE = "You are node {index} of {width} in layer {layer} of {num_layers}."
READS_TEMPLATE = "You read: {sources}."
READS_QUESTION_ONLY = "You read only the question."
UPSTREAM_TEMPLATE = "From {label}:\n{text}"
DOWNSTREAM_TEMPLATE = "Your text goes to: {targets}."
SINK_TEMPLATE = "Your text is the final answer. {answer_format}"
LABEL_TEMPLATE = "layer {layer}, node {index}"
CUT_MARKER_TEMPLATE = " [...cut {count} tokens]"
LABEL_SEPARATOR = "; "  # labels contain a comma, so lists of them need another separator

TEMPLATES = (
    QUESTION_TEMPLATE,
    POSITION_TEMPLATE,
    READS_TEMPLATE,
    READS_QUESTION_ONLY,
    UPSTREAM_TEMPLATE,
    DOWNSTREAM_TEMPLATE,
    SINK_TEMPLATE,
    LABEL_TEMPLATE,
    CUT_MARKER_TEMPLATE,
)


class PromptStyle(NamedTuple):
    """How a node's prompt is finished: which part of a long upstream reply it sees, and
    the chat settings (``topology.upstream_cut``, ``prompts.*``)."""

    upstream_cut: str = "tail"  # tail | head | head_tail
    system: str = ""
    enable_thinking: bool = False


class PromptBody(NamedTuple):
    text: str  # the user content, before any chat template
    truncated_messages: int  # upstream messages cut to the budget
    truncated_tokens: int  # tokens removed in total


class RenderedPrompt(NamedTuple):
    text: str  # full text given to the model
    token_ids: list[int]
    truncated_messages: int  # upstream messages cut to the budget
    truncated_tokens: int  # tokens removed in total


def position_label(name: str) -> str:
    """``"L0N1"`` -> ``"layer 1, node 2"`` (1-based, as the model reads it)."""
    layer, index = parse_node_name(name)
    return LABEL_TEMPLATE.format(layer=layer + 1, index=index + 1)


def render_body(
    topology: Topology,
    node_name: str,
    question: str,
    upstream: Mapping[str, str],
    tokenizer: Any = None,
    *,
    answer_format: str,
    upstream_token_budget: int | None = None,
    upstream_cut: str = "tail",
) -> PromptBody:
    """The user content of ``node_name``'s prompt, upstream texts cut to the budget.

    ``tokenizer`` and ``upstream_token_budget`` may both be None (no cut), so a
    tokenizer can be trained on bodies before it exists.
    """
    node = topology.node(node_name)
    _check_upstream(node_name, node.inputs, upstream)
    if upstream_token_budget is not None and (tokenizer is None or upstream_token_budget < 0):
        raise ValueError(f"upstream_token_budget={upstream_token_budget} needs a tokenizer and a value >= 0")
    lines = [QUESTION_TEMPLATE.format(question=question), _position_line(topology, node_name)]
    lines.append(_reads_line(node.inputs))
    cut_messages = cut_tokens = 0
    for source in node.inputs:
        text, removed = _cut(upstream[source], tokenizer, upstream_token_budget, upstream_cut)
        cut_messages += removed > 0
        cut_tokens += removed
        lines.append(UPSTREAM_TEMPLATE.format(label=position_label(source), text=text))
    lines.append(_closing_line(topology, node_name, answer_format))
    return PromptBody("\n".join(lines), cut_messages, cut_tokens)


def render_node_prompt(
    topology: Topology,
    node_name: str,
    question: str,
    upstream: Mapping[str, str],
    tokenizer: Any,
    *,
    answer_format: str,
    upstream_token_budget: int,
    style: PromptStyle = PromptStyle(),
) -> RenderedPrompt:
    """The full model input for one node: body, chat template if any, token ids."""
    body = render_body(
        topology,
        node_name,
        question,
        upstream,
        tokenizer,
        answer_format=answer_format,
        upstream_token_budget=upstream_token_budget,
        upstream_cut=style.upstream_cut,
    )
    text = apply_chat(tokenizer, body.text, style)
    return RenderedPrompt(text, encode(tokenizer, text), body.truncated_messages, body.truncated_tokens)


def apply_chat(tokenizer: Any, body: str, style: PromptStyle = PromptStyle()) -> str:
    """Wrap ``body`` as one user turn (after the system message, if any)."""
    system = [{"role": "system", "content": style.system}] if style.system else []
    return chat_text(tokenizer, [*system, {"role": "user", "content": body}], style.enable_thinking)


def chat_text(tokenizer: Any, messages: Sequence[Mapping[str, str]], enable_thinking: bool = False,
              generation_prompt: bool = True) -> str:
    """A conversation as the model reads it, ready for the assistant's next turn (or, without
    ``generation_prompt``, ending with its last message): the tokenizer's chat template, or
    each message's content on its own line when it has none. Node prompts and agent
    programs' calls both go through here."""
    if not getattr(tokenizer, "chat_template", None):
        return "".join(f"{m['content']}\n" for m in messages)
    # Templates ignore variables they do not use, so enable_thinking is harmless everywhere;
    # off by default, it keeps Qwen3-style models out of long thinking blocks.
    text = tokenizer.apply_chat_template(
        [dict(m) for m in messages],
        tokenize=False,
        add_generation_prompt=generation_prompt,
        enable_thinking=enable_thinking,
    )
    if not isinstance(text, str):
        raise TypeError(f"apply_chat_template(tokenize=False) returned {type(text).__name__}, expected str")
    return text


def encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` without added special tokens (the chat template has them)."""
    # transformers returns a BatchEncoding (dict-like); index it rather than rely on attributes.
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _check_upstream(node_name: str, inputs: tuple[str, ...], upstream: Mapping[str, str]) -> None:
    missing = [name for name in inputs if name not in upstream]
    if missing:
        raise TopologyError(f"node {node_name} is missing upstream text from {', '.join(missing)}")
    extra = sorted((name for name in upstream if name not in inputs), key=str)
    if extra:
        raise TopologyError(f"node {node_name} got upstream text from {', '.join(extra)}, which it does not read")


def _position_line(topology: Topology, node_name: str) -> str:
    layer, index = parse_node_name(node_name)
    return POSITION_TEMPLATE.format(
        index=index + 1,
        width=topology.widths[layer],
        layer=layer + 1,
        num_layers=topology.num_layers,
    )


def _reads_line(inputs: tuple[str, ...]) -> str:
    if not inputs:
        return READS_QUESTION_ONLY
    return READS_TEMPLATE.format(sources=LABEL_SEPARATOR.join(map(position_label, inputs)))


def _closing_line(topology: Topology, node_name: str, answer_format: str) -> str:
    if node_name == topology.sink:
        return SINK_TEMPLATE.format(answer_format=answer_format).rstrip()
    targets = topology.node(node_name).outputs
    return DOWNSTREAM_TEMPLATE.format(targets=LABEL_SEPARATOR.join(map(position_label, targets)))


def _cut(text: str, tokenizer: Any, budget: int | None, mode: str = "tail") -> tuple[str, int]:
    """``text`` cut to ``budget`` tokens, a marker where tokens went; (text, tokens removed).
    ``tail`` keeps the end (a reasoning reply's conclusion is its last sentence), ``head``
    the start, ``head_tail`` half of each."""
    if budget is None:
        return text, 0
    ids = encode(tokenizer, text)
    removed = len(ids) - budget
    if removed <= 0:
        return text, 0
    marker = CUT_MARKER_TEMPLATE.format(count=removed)
    decode = lambda part: tokenizer.decode(part, skip_special_tokens=False)  # noqa: E731
    if mode == "head":
        return decode(ids[:budget]) + marker, removed
    if mode == "tail":
        return marker.lstrip() + " " + decode(ids[len(ids) - budget:]) if budget else marker.lstrip(), removed
    if mode == "head_tail":
        first = budget // 2
        return decode(ids[:first]) + marker + " " + decode(ids[len(ids) - (budget - first):]), removed
    raise ValueError(f"upstream_cut must be tail, head or head_tail, got {mode!r}")
