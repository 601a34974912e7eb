"""Which rows share a pass, and the tensors of a padded or a packed pass, against numbers
worked out by hand."""

from __future__ import annotations

import torch

from neuromas_dist.learner.packing import build_inputs, pad_fraction, pass_cost, pass_ready, take_pass
from neuromas_dist.learner.rows import Row


def row(prompt: int, response: int, tag: int = 0) -> Row:
    return Row("A", f"q{tag}", tag, list(range(10, 10 + prompt)), list(range(50, 50 + response)), [0.0] * response,
               0, 0.0)


def test_a_pass_costs_the_sum_of_lengths_packed_and_rows_times_the_longest_padded():
    assert pass_cost([5, 3, 2], packed=True) == 10
    assert pass_cost([5, 3, 2], packed=False) == 15
    assert pass_cost([], packed=False) == 0
    # two passes of padded rows [5, 5] and [2, 1]: 10 + 4 tokens computed for 13 real ones
    assert abs(pad_fraction([5, 5, 2, 1], [[5, 5], [2, 1]]) - 1 / 14) < 1e-12


def test_the_longest_rows_go_first_up_to_the_budget_and_the_row_cap():
    queue = [row(2, 1, 0), row(6, 4, 1), row(3, 2, 2), row(5, 5, 3)]  # 3, 10, 5, 10 tokens
    taken, left = take_pass(queue, max_rows=8, max_tokens=20, packed=True)
    assert [r.sample_index for r in taken] == [1, 3] and [r.sample_index for r in left] == [2, 0]
    # padded: 3 rows of 10 would cost 30 > 25, so two; the cap of one row wins over the budget
    assert len(take_pass(queue, 8, 25, packed=False)[0]) == 2
    assert len(take_pass(queue, 1, 100, packed=True)[0]) == 1
    # no token budget: rows only
    assert len(take_pass(queue, 3, 0, packed=False)[0]) == 3


def test_a_row_over_the_budget_runs_alone():
    queue = [row(40, 10, 0), row(2, 1, 1)]
    taken, left = take_pass(queue, max_rows=8, max_tokens=16, packed=True)
    assert [r.sample_index for r in taken] == [0] and [r.sample_index for r in left] == [1]


def test_a_pass_is_ready_at_the_row_cap_or_the_token_budget():
    queue = [row(6, 4), row(3, 2)]  # 15 tokens
    assert pass_ready(queue, max_rows=2, max_tokens=0)
    assert not pass_ready(queue, max_rows=3, max_tokens=16)
    assert pass_ready(queue, max_rows=3, max_tokens=15)


def test_padded_inputs_index_each_response_token_by_the_position_predicting_it():
    rows = [Row("A", "q", 0, [5, 6, 7], [8, 9], [0.0, 0.0], 0, 1.0),
            Row("A", "q", 1, [5], [4, 3, 2], [0.0] * 3, 0, 0.0)]
    x = build_inputs(rows, packed=False)
    assert x.ids.tolist() == [[5, 6, 7, 8, 9], [5, 4, 3, 2, 0]]
    assert x.attn.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]] and x.position_ids is None
    # the hidden state at position p predicts token p + 1: response token j of a P-token prompt at P - 1 + j
    assert x.at[0].tolist() == [0, 0, 1, 1, 1] and x.at[1].tolist() == [2, 3, 0, 1, 2]
    assert x.tok.tolist() == [8, 9, 4, 3, 2]
    assert x.mask().tolist() == [[True, True, False], [True, True, True]]
    assert (x.spans, x.split_dim) == ([1, 1], 0)


def test_packed_inputs_are_one_sequence_with_positions_restarting_per_row():
    rows = [Row("A", "q", 0, [5, 6, 7], [8, 9], [0.0, 0.0], 0, 1.0),
            Row("B", "q", 1, [5], [4, 3, 2], [0.0] * 3, 0, 0.0)]
    x = build_inputs(rows, packed=True)
    assert x.ids.tolist() == [[5, 6, 7, 8, 9, 5, 4, 3, 2]] and x.attn is None
    assert x.position_ids.tolist() == [[0, 1, 2, 3, 4, 0, 1, 2, 3]]
    assert x.at[0].tolist() == [0] * 5 and x.at[1].tolist() == [2, 3, 5, 6, 7]
    assert (x.row.tolist(), x.col.tolist()) == ([0, 0, 1, 1, 1], [0, 1, 0, 1, 2])
    assert (x.spans, x.split_dim, x.shape) == ([5, 4], 1, (2, 3))


def test_packed_rows_do_not_see_each_other(tiny_model_dir):
    """transformers keeps attention inside each row when position ids restart: a row's
    hidden states are the same alone as packed behind another row."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    rows = [row(7, 3, 0), row(4, 5, 1)]
    x = build_inputs(rows, packed=True)
    with torch.no_grad():
        packed = model.get_decoder()(input_ids=x.ids, position_ids=x.position_ids, use_cache=False).last_hidden_state
        alone = model.get_decoder()(input_ids=x.ids[:, 10:], use_cache=False).last_hidden_state
    assert torch.allclose(packed[:, 10:], alone, atol=1e-5)
    assert not torch.allclose(packed[:, 10:], model.get_decoder()(input_ids=x.ids, use_cache=False)
                              .last_hidden_state[:, 10:].detach(), atol=1e-3)  # the mask mattered
