"""Your own reward and prompt by config: ``data.reward_fn`` replaces a task's reward (guarded:
an exception or a non-finite value scores 0, is counted and warned about once), and
``data.prompt_template`` builds the question from a row's fields."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from neuromas_dist.config import load_config
from neuromas_dist.rollout.rows import score_text
from neuromas_dist.tasks import DataError, load_task_data

FIXTURES = Path(__file__).parent / "fixtures"
ROWS = [{"stem": "Which number is even?", "options": ["3", "4", "5"], "key": "B"},
        {"stem": "Which number is odd?", "options": ["2", "7"], "key": "B"}]


def file_task(tmp_path: Path, *overrides: str):
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in ROWS))
    cfg = load_config(None, ["data.task=file", f"data.train_path={path}", f"data.eval_path={path}",
                             "data.answer_field=key", "data.answer_type=choice", *overrides])
    return load_task_data(cfg.data)


def test_prompt_template_builds_the_question_from_fields_with_lettered_choices(tmp_path):
    d = file_task(tmp_path, "data.prompt_template={stem} Pick one.\n{options}")
    assert d.train[0].question == "Which number is even? Pick one.\n(A) 3\n(B) 4\n(C) 5"
    assert d.task.score("The answer is (B).", d.train[0]).reward == 1.0
    with pytest.raises(DataError, match=r"rows.jsonl row 1: data.prompt_template names field 'choices', "
                                        r"which the row lacks; fields: stem, options, key"):
        file_task(tmp_path, "data.prompt_template={stem}\n{choices}")


def test_reward_fn_replaces_the_tasks_reward(tmp_path):
    d = file_task(tmp_path, "data.prompt_template={stem}", "data.reward_fn=reward_plugins:gold_mentioned")
    ex = d.train[0]
    assert d.task.reward_fn == "reward_plugins:gold_mentioned"
    assert score_text(d.task, "It is B", ex).reward == 1.0
    assert score_text(d.task, "B, or so", ex).reward == 0.5
    assert score_text(d.task, "no idea", ex).reward == 0.0


@pytest.mark.parametrize("fn,kind", [("raises", "error"), ("not_a_number", "nonfinite")])
def test_a_failing_reward_fn_scores_zero_is_counted_and_warned_once(tmp_path, capsys, fn, kind):
    d = file_task(tmp_path, "data.prompt_template={stem}", f"data.reward_fn=reward_plugins:{fn}")
    first = score_text(d.task, "The answer is (B).", d.train[0])
    second = score_text(d.task, "The answer is (B).", d.train[1])
    assert first.reward == second.reward == 0.0 and first.parsed == "B"
    assert first.flags[f"rollout/flag_reward_fn_{kind}"] == 1
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[reward]")]
    assert len(warnings) == 1 and f"data.reward_fn=reward_plugins:{fn}" in warnings[0]


@pytest.mark.parametrize("spec,message", [("reward_plugins:NOT_CALLABLE", "not a function"),
                                          ("no_such_module:f", "cannot import no_such_module (ModuleNotFoundError"),
                                          ("reward_plugins", "not a function; write package.module:function")])
def test_a_bad_reward_fn_is_one_line_before_anything_starts(tmp_path, spec, message):
    with pytest.raises(DataError, match=rf"data.reward_fn={re.escape(spec)}: .*{re.escape(message)}"):
        file_task(tmp_path, "data.prompt_template={stem}", f"data.reward_fn={spec}")


def test_reward_fn_on_a_benchmark_task_too():
    cfg = load_config(None, ["data.task=bbh_navigate", f"data.local_dir={FIXTURES / 'bbh_navigate'}",
                             "data.reward_fn=reward_plugins:gold_mentioned"])
    d = load_task_data(cfg.data)
    assert d.task.answer_type == "yesno" and d.task.reward_fn
    assert d.task.score(f"... {d.eval[0].answer}", d.eval[0]).reward == 1.0
