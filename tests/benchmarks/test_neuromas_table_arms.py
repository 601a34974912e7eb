"""The comparisons table's arms from a config: matched LoRA parameters, the paper-scale
configs resolved into every arm without downloading anything, rows and comparisons."""

from __future__ import annotations

import dataclasses

import pytest

from benchmarks.lora_params import count
from benchmarks.neuromas_table.__main__ import REPO, _parser, main, model_config, plan
from benchmarks.neuromas_table.arms import TableSpec, arm_overrides, build_arms, matched_rank, run_dir
from benchmarks.neuromas_table.results import comparisons, rows
from neuromas_dist.config import load_config

PAPER = {"neuromas3_qwen3-0.6b_gsm8k": "neuromas7_qwen3-0.6b_gsm8k",
         "neuromas3_gemma3-1b_gsm8k": "neuromas7_gemma3-1b_gsm8k"}


def _arm_configs(config, tmp_path):
    args = _parser().parse_args(["--config", str(config), "--runs", str(tmp_path)])
    path, cfg, spec, extra, root, _ = plan(args)
    matched = matched_rank(cfg, model_config(cfg))
    arms = build_arms(cfg, spec, matched)
    for arm in arms:  # a grown arm's config checks its source exists
        if arm.grow_from:
            run_dir(root, arm.grow_from, 0).mkdir(parents=True, exist_ok=True)
    return cfg, spec, matched, {a.name: load_config(path, [*extra, *arm_overrides(a, root, 0)]) for a in arms}


@pytest.mark.parametrize("small,large", sorted(PAPER.items()))
def test_paper_configs_resolve_into_every_arm(small, large, tmp_path):
    cfg, spec, matched, arms = _arm_configs(REPO / "configs" / f"{small}.yaml", tmp_path)
    assert (spec.small_steps, spec.large_steps, spec.seeds) == (500, 1000, (0, 1, 2))
    # the single adapter has exactly NeuroMAS-3's LoRA parameters (benchmarks.lora_params counts)
    assert matched.rank == 3 * cfg.lora.rank and matched.single_total == matched.small_total == count(small)["total"]
    assert arms["single"].lora.rank == matched.rank and arms["single"].topology.widths == (1,)
    assert arms["single"].trainer.eval_samples == 7  # the votes of 3 and 7 come from its sampled passes
    assert arms["neuromas7_grown_gated"].trainer.grow_from == str(run_dir(tmp_path, "neuromas3", 0))
    assert arms["neuromas7_grown_carry"].trainer.growth_mode == "carry"
    # NeuroMAS-5 grown from NeuroMAS-3, and NeuroMAS-7 grown from it: 3 -> 5 -> 7 beside 3 -> 7
    assert arms["neuromas5_grown"].topology.widths == (2, 2, 1)
    assert arms["neuromas5_grown"].trainer.grow_from == str(run_dir(tmp_path, "neuromas3", 0))
    via5 = arms["neuromas7_grown_via5"]
    assert via5.topology.widths == (4, 2, 1) and via5.trainer.growth_mode == "gated"
    assert via5.trainer.grow_from == str(run_dir(tmp_path, "neuromas5_grown", 0))
    # every NeuroMAS-7 arm is the committed NeuroMAS-7 config in all but the training schedule
    committed = load_config(REPO / "configs" / f"{large}.yaml")
    for name in ("neuromas7_scratch", "neuromas7_grown_gated", "neuromas7_grown_carry"):
        for section in ("model", "topology", "lora", "data", "sampling", "rollout", "learner", "resources"):
            assert getattr(arms[name], section) == getattr(committed, section), (name, section)
        assert arms[name].trainer.steps == 1000 and arms[name].trainer.eval_every == 500


def test_single_arm_is_the_committed_single_llm_config(tmp_path):
    _, _, _, arms = _arm_configs(REPO / "configs" / "neuromas3_qwen3-0.6b_gsm8k.yaml", tmp_path)
    committed = load_config(REPO / "configs" / "single_qwen3-0.6b_gsm8k.yaml")
    for section in ("model", "topology", "lora", "data", "sampling", "rollout", "learner", "resources"):
        assert getattr(arms["single"], section) == getattr(committed, section), section


def test_every_comparison_names_table_rows():
    spec = TableSpec(15, 30, (0, 1, 2))
    keys = [r.key for r in rows(spec)]
    assert len(keys) == len(set(keys))
    for a, b, _ in comparisons(spec):
        assert a in keys and b in keys
    equal = next(r for r in rows(spec) if r.key == "grown_gated_equal")
    assert equal.pass_name == "step_000015" and equal.steps == 30 == spec.large_steps  # (c) + (e') = (d)


@pytest.mark.parametrize("small,large", [(0, 5), (5, 5), (6, 5)])
def test_spec_needs_fewer_small_than_large_steps(small, large):
    with pytest.raises(ValueError, match="small steps"):
        TableSpec(small, large, (0,)).validate()


def test_table_refuses_a_large_graph_as_its_starting_config(tmp_path):
    cfg = load_config(REPO / "configs" / "neuromas7_qwen3-0.6b_gsm8k.yaml")
    with pytest.raises(ValueError, match="small graph"):
        build_arms(cfg, TableSpec(5, 10, (0,)), matched_rank(cfg, model_config(cfg)))


def test_bad_input_is_one_line_exit_2(tmp_path, capsys):
    assert main(["--config", str(tmp_path / "nope.yaml"), "--runs", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("table error: config file not found")
    assert main(["--large-steps", "3", "--runs", str(tmp_path)]) == 2  # D must exceed C = 15
    assert "small steps" in capsys.readouterr().err


def test_matched_rank_refuses_adapters_on_no_module():
    cfg = load_config(REPO / "configs" / "neuromas3_qwen3-0.6b_gsm8k.yaml")
    bad = dataclasses.replace(cfg, lora=dataclasses.replace(cfg.lora, target_modules=("no_such_module",)))
    with pytest.raises(ValueError, match="match no Linear module"):
        matched_rank(bad, model_config(cfg))


@pytest.mark.parametrize("bench", ["arc_challenge", "humaneval", "mmlu_college_physics"])
def test_a_paper_benchmark_config_derives_every_arm_on_its_own_data(bench, tmp_path):
    cfg, _, matched, arms = _arm_configs(REPO / "configs" / "paper" / bench / "neuromas3.yaml", tmp_path)
    assert matched.rank == 48 and {a.data for a in arms.values()} == {cfg.data}
    assert arms["single"].topology.widths == (1,) and arms["neuromas7_scratch"].topology.widths == (4, 2, 1)
