"""Bad inputs to a training run: one line on stderr and exit 2, before Ray or any actor
starts, and the run directory holds nothing but its config."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from neuromas_dist.adapters.peft_io import write_adapter_set
from neuromas_dist.config import load_config
from neuromas_dist.driver.run import run_training
from neuromas_dist.rollout.adapters import zero_adapter_set
from neuromas_dist.tasks.sandbox import isolation


def _one_line_exit_2(cfg, capsys, starts: str) -> None:
    assert run_training(cfg) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(starts) and "\n" not in err and "Traceback" not in err, err
    assert sorted(p.name for p in Path(cfg.logging.run_dir).iterdir()) == ["config.yaml"]


def test_a_data_file_without_its_question_field_is_one_line(tmp_path, capsys):
    data = tmp_path / "data.jsonl"
    data.write_text('{"prompt": "2 + 2?", "answer": "4"}\n')
    cfg = load_config(None, ["data.task=file", f"data.train_path={data}", f"data.eval_path={data}",
                             f"logging.run_dir={tmp_path / 'run'}"])
    _one_line_exit_2(cfg, capsys, "data error: ")


def test_more_questions_a_step_than_the_split_holds_is_one_line(tmp_path, capsys):
    cfg = load_config(None, ["data.n_train=4", "trainer.questions_per_step=8", f"logging.run_dir={tmp_path / 'run'}"])
    _one_line_exit_2(cfg, capsys, "data error: trainer.questions_per_step=8")


def test_growing_from_adapters_of_another_lora_rank_is_one_line(tmp_path, tiny_model_dir, capsys):
    small = tmp_path / "small"
    lora = load_config(None, []).lora
    other = dataclasses.replace(lora, rank=lora.rank * 2)
    write_adapter_set(small / "adapters", zero_adapter_set(tiny_model_dir, ["L0N0", "L0N1", "L1N0"], other))
    cfg = load_config(None, [f"trainer.grow_from={small}", "topology.widths=[2, 2, 1]", "trainer.growth_mode=carry",
                             f"logging.run_dir={tmp_path / 'run'}"])
    _one_line_exit_2(cfg, capsys, "growth error: ")


def test_a_machine_that_cannot_isolate_code_checks_as_required_is_one_line(tmp_path, capsys, monkeypatch):
    """data.sandbox.require=full on a machine that gives less (simulated: the probe answers
    'none'): the run refuses before Ray, naming the fix."""
    weak = isolation.Isolation("none", False, False, False, False)
    monkeypatch.setattr(isolation, "probe", lambda: weak)
    cfg = load_config("configs/paper/humaneval/neuromas3.yaml", [
        "data.local_dir=tests/tasks/fixtures/humaneval", "data.sandbox.require=full", "trainer.questions_per_step=1",
        f"logging.run_dir={tmp_path / 'run'}"])
    _one_line_exit_2(cfg, capsys, "sandbox error: data.sandbox.require=full but this machine gives code checks only")


def test_a_program_that_does_not_import_is_one_line(tmp_path, capsys):
    cfg = load_config(None, ["program.entry=examples.programs.no_such:solve", "program.agents=[solver]",
                             f"logging.run_dir={tmp_path / 'run'}"])
    _one_line_exit_2(cfg, capsys, "program error: program.entry=examples.programs.no_such:solve: cannot import")


def test_a_sync_program_in_process_is_one_line(tmp_path, capsys):
    """inproc needs a coroutine (its client is async); the fix is named: transport http."""
    cfg = load_config(None, ["program.entry=examples.programs.neuromas:_tokenizer", "program.agents=[solver]",
                             f"logging.run_dir={tmp_path / 'run'}"])
    _one_line_exit_2(cfg, capsys, "program error: program.entry=examples.programs.neuromas:_tokenizer: must take")
