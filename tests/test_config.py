"""Config loading: YAML, dotted overrides, and one-line errors that name the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from neuromas_dist.config import Config, ConfigError, GrowthStage, dump_yaml, load_config

REPO = Path(__file__).resolve().parents[1]


def test_default_yaml_is_the_embedded_default():
    # `launch` with no --config runs the dataclass defaults; the YAML documents them.
    assert load_config("configs/default.yaml") == load_config(None)


def test_defaults_validate():
    cfg = load_config()
    assert cfg == Config().validate()
    assert cfg.topology.widths == (2, 1)


def test_yaml_then_overrides_win(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("trainer:\n  steps: 5\ntopology:\n  widths: [4, 2, 1]\n")
    cfg = load_config(path, ["trainer.steps=7", "learner.lr=0.01", "topology.edges=[]"])
    assert (cfg.trainer.steps, cfg.topology.widths, cfg.learner.lr) == (7, (4, 2, 1), 0.01)


def test_growth_stages_parse():
    cfg = load_config(None, ["trainer.steps=20", "trainer.growth=[{at_step: 10, widths: [4, 2, 1]}]"])
    assert cfg.trainer.growth == (GrowthStage(10, (4, 2, 1)),)


def test_dump_round_trip(tmp_path):
    cfg = load_config(None, ["trainer.steps=20", "trainer.growth=[{at_step: 5, widths: [4, 2, 1]}]"])
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_yaml(cfg))
    assert load_config(path) == cfg


@pytest.mark.parametrize("override, message", [
    ("trainer.stepz=3", "unknown key 'trainer.stepz'"),
    ("trainr.steps=3", "unknown key 'trainr'"),
    ("trainer.steps=abc", "trainer.steps: expected int, got 'abc'"),
    ("trainer.steps=-1", "trainer.steps=-1: must be >= 0"),
    ("learner.baseline=median", "learner.baseline='median': must be one of ema, batch_mean, loo"),
    ("sampling.top_p=1.5", "sampling.top_p=1.5: must be <= 1.0"),
    ("topology.widths=5", "topology.widths: expected a list, got 5"),
    ("topology.widths=[2, 2]", "exactly one sink"),
    ("topology.edges=['L0N0->L9N0']", "L9N0"),
    ("learner.baseline=loo", None),
    ("sampling.n_samples=1", "learner.baseline=loo needs sampling.n_samples >= 2"),
    ("data.task=file", "data.train_path is required when data.task=file"),
    ("model.name_or_path=./no/such/model", "model.name_or_path=./no/such/model: directory not found"),
    ("trainer.growth=[{at_step: 90, widths: [4,2,1]}]", "must be below trainer.steps="),
    ("trainer.growth=[{at_step: 28, widths: [4,2,1]}]", "the fade after step 27 ends after trainer.steps=30"),
    ("trainer", "override 'trainer': expected key.path=value"),
])
def test_bad_values_name_the_key(override, message):
    if message is None:
        load_config(None, [override])
        return
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_a_model_directory_without_a_tokenizer_is_one_line(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ConfigError) as err:
        load_config(None, [f"model.name_or_path={tmp_path}"])
    assert f"model.name_or_path={tmp_path}: no tokenizer in the directory" in str(err.value)
    assert "\n" not in str(err.value)
    (tmp_path / "config.json").unlink()
    with pytest.raises(ConfigError, match="no config.json"):
        load_config(None, [f"model.name_or_path={tmp_path}"])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer: [steps: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml line \d+: not valid YAML"):
        load_config(bad)
    flat = tmp_path / "flat.yaml"
    flat.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(flat)


P = ["program.entry=examples.programs.solver_verifier:solve"]


@pytest.mark.parametrize("overrides, message", [
    (["program.agents=[solver]"], "program.agents and program.sampling need program.entry"),
    ([*P], "program.agents must name at least one agent"),
    (["program.entry=solve", "program.agents=[a]"], "program.entry=solve: expected package.module:function"),
    ([*P, "program.agents=[solver, solver]"], "names an agent twice"),
    ([*P, "program.agents=['../x']"], "'../x' is not a valid agent name"),
    ([*P, "program.agents=[solver]", "program.sampling=[{agent: verifier}]"],
     "program.sampling[0].agent='verifier': not in program.agents"),
    ([*P, "program.agents=[solver]", "program.transport=grpc"], "program.transport='grpc': must be one of"),
    ([*P, "program.agents=[solver]", "program.max_calls=0"], "program.max_calls=0: must be >= 1"),
    ([*P, "program.agents=[solver]", "trainer.growth=[{at_step: 5, widths: [4,2,1]}]"], "a program has none"),
    (["sampling.per_node=[{agent: solver, temperature: 0.5}]"],
     "sampling.per_node[0].agent='solver': not a graph node"),
    ([*P, "program.agents=[solver]", "sampling.per_node=[{agent: L0N0}]"], "a program sets each agent's in program"),
    (["sampling.per_node=[{agent: L0N0, top_p: 0.9}]", "learner.micro_batches=mixed"],
     "needs learner.micro_batches=per_node"),
    (["learner.epochs=2"], "need learner.objective=ppo_clip"),
    (["learner.advantage_norm=std", "learner.baseline=batch_mean"], "advantage_norm=std needs learner.baseline=loo"),
])
def test_a_bad_program_config_names_the_key(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    cfg = load_config(path)
    assert cfg.topology.widths[-1] == 1


def _launch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "neuromas_dist.launch", *args],
                          capture_output=True, text=True, cwd=REPO, timeout=120)


def test_cli_bad_config_is_one_line_exit_2():
    proc = _launch("trainer.stepz=3")
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines == ["config error: unknown key 'trainer.stepz' (known in trainer: steps, questions_per_step, "
                     "mode, max_staleness, eval_every, eval_samples, checkpoint_every, seed, grow_from, growth, "
                     "growth_mode, growth_fade_steps, final_ablation)"]
    assert "Traceback" not in proc.stdout + proc.stderr


def test_cli_missing_config_file_exit_2():
    proc = _launch("--config", "configs/does_not_exist.yaml")
    assert proc.returncode == 2
    assert "config file not found: configs/does_not_exist.yaml" in proc.stderr


def test_cli_refuses_a_run_dir_that_holds_a_run(tmp_path):
    """A second run into the same directory would append to its metrics: one line, exit 2,
    nothing touched."""
    (tmp_path / "metrics.jsonl").write_text('{"step": 0}\n')
    proc = _launch("--run-dir", str(tmp_path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert [ln for ln in proc.stderr.splitlines() if ln.strip()] == [
        f"config error: run directory {tmp_path} already holds a run (metrics.jsonl); --resume {tmp_path} "
        f"continues it, or choose another --run-dir"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]
    assert (tmp_path / "metrics.jsonl").read_text() == '{"step": 0}\n'


def test_cli_help_lists_every_key():
    proc = _launch("--help")
    assert proc.returncode == 0
    for key in ("trainer.steps=", "learner.baseline=", "rollout.max_loras=", "topology.widths="):
        assert key in proc.stdout


def test_a_config_built_in_code_is_range_checked_as_a_loaded_one():
    import dataclasses

    cfg = Config()
    with pytest.raises(ConfigError, match=r"^learner\.micro_batch_size=0: must be >= 1$"):
        dataclasses.replace(cfg.learner, micro_batch_size=0)
    with pytest.raises(ConfigError, match=r"^learner\.baseline='median': must be one of"):
        dataclasses.replace(cfg.learner, baseline="median")
    with pytest.raises(ConfigError, match=r"^topology\.widths=0"):
        dataclasses.replace(cfg.topology, widths=(2, 0))


def test_numbers_and_templates_are_taken_as_typed():
    """YAML 1.1 reads 1e-5 as a string: a float key takes it as the number; a text key takes
    an override's text as written ("{stem}" would otherwise be a YAML mapping)."""
    cfg = load_config(None, ["learner.lr=1e-5", "data.prompt_template={stem}\n{options}"])
    assert cfg.learner.lr == 1e-5 and cfg.data.prompt_template == "{stem}\n{options}"
    with pytest.raises(ConfigError, match="learner.lr: expected float, got 'fast'"):
        load_config(None, ["learner.lr=fast"])


@pytest.mark.parametrize("key,text,value", [
    ("learner.lr", "1e-5", 1e-5), ("learner.lr", "3e-6", 3e-6), ("learner.lr", "1.0e9", 1.0e9),
    ("learner.lr", "1_000.5", 1000.5), ("trainer.steps", "1_000", 1000), ("trainer.steps", "30", 30),
])
def test_numbers_parse_as_people_write_them_on_the_command_line_and_in_files(tmp_path, key, text, value):
    section, name = key.split(".")
    (tmp_path / "c.yaml").write_text(f"{section}:\n  {name}: {text}\n")
    for cfg in (load_config(None, [f"{key}={text}"]), load_config(tmp_path / "c.yaml")):
        got = getattr(getattr(cfg, section), name)
        assert got == value and type(got) is type(value)


def test_a_config_extends_the_base_it_names(tmp_path):
    (tmp_path / "shared.yaml").write_text("learner:\n  lr: 0.1\n  baseline: ema\ntopology:\n  widths: [4, 2, 1]\n")
    (tmp_path / "arm.yaml").write_text("base: shared.yaml\nlearner:\n  lr: 1e-5\ntopology:\n  widths: [2, 1]\n")
    cfg = load_config(tmp_path / "arm.yaml", ["trainer.steps=3"])
    # sections merge key by key; a list replaces the base's; overrides come last
    assert (cfg.learner.lr, cfg.learner.baseline, cfg.topology.widths, cfg.trainer.steps) == (1e-5, "ema", (2, 1), 3)


def test_a_base_cycle_or_a_missing_base_is_one_line(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match=r"a.yaml: base b.yaml makes a cycle: b.yaml -> a.yaml -> b.yaml"):
        load_config(tmp_path / "b.yaml")
    (tmp_path / "c.yaml").write_text("base: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="config file not found: .*nowhere.yaml"):
        load_config(tmp_path / "c.yaml")


def test_every_paper_benchmark_has_its_arms():
    """Six benchmarks x NeuroMAS-3/5/7 and the parameter-matched single LLM on Qwen3-0.6B, and
    NeuroMAS-3 on Gemma-3-1B-IT for ARC, each a few lines over the shared setup."""
    paper = Path(__file__).resolve().parents[1] / "configs" / "paper"
    tasks = {}
    for bench in ("arc_challenge", "bbh_navigate", "mmlu_abstract_algebra", "mmlu_college_physics",
                  "mmlu_professional_medicine", "humaneval"):
        arms = {arm: load_config(paper / bench / f"{arm}.yaml")
                for arm in ("neuromas3", "neuromas5", "neuromas7", "single")}
        assert {a: max(sum(w) for w in [c.topology.widths, *(g.widths for g in c.trainer.growth)])
                for a, c in arms.items()} == {"neuromas3": 3, "neuromas5": 5, "neuromas7": 7, "single": 1}
        assert arms["single"].lora.rank == 3 * arms["neuromas3"].lora.rank  # as many LoRA parameters
        assert all(len((paper / bench / f"{arm}.yaml").read_text().splitlines()) <= 12 for arm in arms)
        tasks[bench] = (arms["neuromas3"].data.task, arms["neuromas3"].data.subject)
        # the objectives of benchmarks.objectives, each NeuroMAS-3 with one learner change
        objectives = {arm: load_config(paper / bench / f"neuromas3_{arm}.yaml").learner
                      for arm in ("std", "ppo", "kl", "tis")}
        assert (objectives["std"].advantage_norm, objectives["ppo"].objective, objectives["ppo"].epochs,
                objectives["kl"].kl_coef, objectives["tis"].rollout_correction) == ("std", "ppo_clip", 2, 0.01,
                                                                                   "tis_token")
        assert arms["neuromas3"].learner.objective == "reinforce" and not arms["neuromas3"].learner.kl_coef
    assert tasks["mmlu_college_physics"] == ("mmlu", "college_physics") and tasks["humaneval"][0] == "humaneval"
    gemma = load_config(paper / "arc_challenge" / "neuromas3_gemma3-1b.yaml")
    assert gemma.model.name_or_path == "google/gemma-3-1b-it" and gemma.data.task == "arc_challenge"
