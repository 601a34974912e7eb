import re

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from neuromas_dist.graph import prompts
from neuromas_dist.graph.prompts import PromptStyle, apply_chat, position_label, render_body, render_node_prompt
from neuromas_dist.graph.topology import Topology, TopologyError

ROLE_WORDS = (
    "planner", "plan", "critic", "critique", "solver", "verifier", "verify", "judge",
    "aggregator", "aggregate", "expert", "manager", "reviewer", "review", "coordinator",
    "leader", "worker", "assistant", "agent", "debater", "summarizer", "summarise",
    "summarize", "checker", "proposer", "role", "teacher", "student", "executor",
)
ANSWER_FORMAT = 'End with "The answer is N."'
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "Question: What is (3 + 4) * 2 mod 10? The answer is 4.",
    "You are node 1 of 2 in layer 1 of 2. You read only the question.",
    "From layer 1, node 2: the sum is seven, times two is fourteen.",
]


def _tokenizer(chat_template=None):
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<unk>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer)
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")
    wrapped.chat_template = chat_template
    return wrapped


@pytest.fixture(scope="module")
def plain_tok():
    return _tokenizer()


@pytest.fixture(scope="module")
def chat_tok():
    return _tokenizer(CHAT_TEMPLATE)


@pytest.fixture(scope="module")
def skip_topo():
    # L0N0 -> L1N0 -> L2N0 plus a skip edge L0N1 -> L2N0.
    return Topology.build([2, 1, 1], ["L0N0->L1N0", "L0N1->L2N0", "L1N0->L2N0"])


TEXTS = {"L0N0": "alpha seven", "L0N1": "beta fourteen", "L1N0": "gamma four"}


def _upstream(topo, name):
    return {src: TEXTS[src] for src in topo.node(name).inputs}


def _render(topo, name, tok, budget=64):
    return render_node_prompt(
        topo, name, "What is (3 + 4) * 2 mod 10?", _upstream(topo, name), tok,
        answer_format=ANSWER_FORMAT, upstream_token_budget=budget,
    )


@pytest.mark.parametrize("name", ["L0N0", "L0N1", "L1N0", "L2N0"])
def test_prompt_holds_exactly_its_upstream_texts(skip_topo, plain_tok, name):
    text = _render(skip_topo, name, plain_tok).text
    inputs = skip_topo.node(name).inputs
    for src, upstream_text in TEXTS.items():
        assert (upstream_text in text) == (src in inputs), (name, src)
    assert text.startswith("Question: What is (3 + 4) * 2 mod 10?\n")


def test_sink_prompt_layout(skip_topo, plain_tok):
    text = _render(skip_topo, "L2N0", plain_tok).text
    assert text == (
        "Question: What is (3 + 4) * 2 mod 10?\n"
        "You are node 1 of 1 in layer 3 of 3.\n"
        "You read: layer 1, node 2; layer 2, node 1.\n"
        "From layer 1, node 2:\nbeta fourteen\n"
        "From layer 2, node 1:\ngamma four\n"
        'Your text is the final answer. End with "The answer is N."\n'
    )


def test_first_layer_prompt_layout(skip_topo, plain_tok):
    text = _render(skip_topo, "L0N1", plain_tok).text
    assert text == (
        "Question: What is (3 + 4) * 2 mod 10?\n"
        "You are node 2 of 2 in layer 1 of 3.\n"
        "You read only the question.\n"
        "Your text goes to: layer 3, node 1.\n"
    )


def test_answer_format_only_for_sink(skip_topo, plain_tok):
    for name in skip_topo.names:
        text = _render(skip_topo, name, plain_tok).text
        assert (ANSWER_FORMAT in text) == (name == skip_topo.sink)
        assert ("Your text goes to" in text) == (name != skip_topo.sink)


def test_position_label_is_one_based():
    assert position_label("L0N0") == "layer 1, node 1"
    assert position_label("L2N3") == "layer 3, node 4"


@pytest.mark.parametrize("mode", ["tail", "head", "head_tail"])
def test_truncation_marker_and_counts(skip_topo, plain_tok, mode):
    long_text = "the sum is seven times two is fourteen " * 6
    ids = plain_tok(long_text, add_special_tokens=False)["input_ids"]
    upstream = {"L0N1": long_text, "L1N0": "gamma four"}
    budget = len(plain_tok("gamma four", add_special_tokens=False)["input_ids"])  # the short one fits
    out = render_node_prompt(
        skip_topo, "L2N0", "q?", upstream, plain_tok,
        answer_format=ANSWER_FORMAT, upstream_token_budget=budget, style=PromptStyle(upstream_cut=mode),
    )
    removed = len(ids) - budget
    assert removed > 10
    marker = f"[...cut {removed} tokens]"
    first = budget // 2
    seen = {"head": f"{plain_tok.decode(ids[:budget])} {marker}",
            "tail": f"{marker} {plain_tok.decode(ids[-budget:])}",
            "head_tail": f"{plain_tok.decode(ids[:first])} {marker} "
                         f"{plain_tok.decode(ids[len(ids) - (budget - first):])}"}
    assert f"From layer 1, node 2:\n{seen[mode]}\n" in out.text
    assert "gamma four\n" in out.text and out.text.count("[...cut") == 1
    assert (out.truncated_messages, out.truncated_tokens) == (1, removed)


def test_the_default_cut_keeps_the_conclusion_of_a_long_reply(skip_topo, plain_tok):
    """A reasoning reply longer than the budget states its answer in its last sentence:
    the default (tail) passes that on, a head cut would drop it."""
    reply = "Let me think step by step. " * 20 + "So the answer is forty two."
    upstream = {"L0N1": reply, "L1N0": "gamma four"}

    def shown(style):
        return render_node_prompt(skip_topo, "L2N0", "q?", upstream, plain_tok, answer_format=ANSWER_FORMAT,
                                  upstream_token_budget=12, style=style).text

    assert "answer is forty two." in shown(PromptStyle())
    assert "forty two" not in shown(PromptStyle(upstream_cut="head"))


def test_system_message_and_thinking_reach_the_chat_template(skip_topo):
    class Recorder:
        chat_template = "{{ messages }}"

        def apply_chat_template(self, messages, **kw):
            self.seen = (messages, kw["enable_thinking"])
            return "rendered"

    tok = Recorder()
    assert apply_chat(tok, "body", PromptStyle(system="Be brief.", enable_thinking=True)) == "rendered"
    assert tok.seen == ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "body"}], True)
    apply_chat(tok, "body")
    assert tok.seen == ([{"role": "user", "content": "body"}], False)


def test_budget_at_exact_length_cuts_nothing(skip_topo, plain_tok):
    n = len(plain_tok("beta fourteen", add_special_tokens=False)["input_ids"])
    out = _render(skip_topo, "L2N0", plain_tok, budget=n)
    assert "[...cut" not in out.text and out.truncated_messages == 0 and out.truncated_tokens == 0


def test_upstream_mismatch_names_the_node(skip_topo, plain_tok):
    kwargs = dict(answer_format=ANSWER_FORMAT, upstream_token_budget=8)
    with pytest.raises(TopologyError, match="node L2N0 is missing upstream text from L1N0"):
        render_node_prompt(skip_topo, "L2N0", "q?", {"L0N1": "x"}, plain_tok, **kwargs)
    with pytest.raises(TopologyError, match="node L1N0 got upstream text from L0N1"):
        render_node_prompt(skip_topo, "L1N0", "q?", {"L0N0": "x", "L0N1": "y"}, plain_tok, **kwargs)
    with pytest.raises(TopologyError, match="unknown node 'L9N0'"):
        render_node_prompt(skip_topo, "L9N0", "q?", {}, plain_tok, **kwargs)


def test_plain_tokenizer_text_and_token_ids(skip_topo, plain_tok):
    out = _render(skip_topo, "L1N0", plain_tok)
    body = render_body(skip_topo, "L1N0", "What is (3 + 4) * 2 mod 10?", _upstream(skip_topo, "L1N0"),
                       answer_format=ANSWER_FORMAT)
    assert out.text == body.text + "\n"
    assert out.token_ids == plain_tok(out.text, add_special_tokens=False)["input_ids"]
    assert plain_tok.decode(out.token_ids) == out.text


def test_chat_template_wraps_body(skip_topo, chat_tok):
    out = _render(skip_topo, "L1N0", chat_tok)
    body = render_body(skip_topo, "L1N0", "What is (3 + 4) * 2 mod 10?", _upstream(skip_topo, "L1N0"),
                       answer_format=ANSWER_FORMAT)
    assert out.text == f"<|im_start|>user\n{body.text}<|im_end|>\n<|im_start|>assistant\n"
    start_id = chat_tok.convert_tokens_to_ids("<|im_start|>")
    assert out.token_ids.count(start_id) == 2
    assert chat_tok.decode(out.token_ids) == out.text


def test_render_body_budget_needs_tokenizer(skip_topo):
    with pytest.raises(ValueError, match="upstream_token_budget=4 needs a tokenizer"):
        render_body(skip_topo, "L1N0", "q?", {"L0N0": "x"}, answer_format="", upstream_token_budget=4)


def test_no_role_words_in_templates_or_prompts(skip_topo, plain_tok):
    pattern = re.compile(r"\b(" + "|".join(ROLE_WORDS) + r")\w*", re.IGNORECASE)
    for template in prompts.TEMPLATES:
        assert not pattern.search(template), template
    for name in skip_topo.names:
        text = _render(skip_topo, name, plain_tok).text
        assert not pattern.search(text.replace(ANSWER_FORMAT, "")), text
