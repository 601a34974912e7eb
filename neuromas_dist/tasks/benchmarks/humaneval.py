"""HumanEval (openai/openai_humaneval): complete a Python function from its signature and
docstring; the reward is 1 when the task's own tests pass against it (``tasks/sandbox``: the tests in a
judge process, the reply in a jailed one that only answers calls).

Rows: ``task_id``, ``prompt`` (imports, signature, docstring), ``canonical_solution``,
``test`` (defines ``check(candidate)``), ``entry_point``. HumanEval has 164 problems in one
split (``test``): by default the first half trains and the second half is held out. A reply
may hold the whole function in a fenced block, or continue the body.
"""

from __future__ import annotations

from neuromas_dist.tasks.base import ANSWER_FORMATS, CodeTask, Example
from neuromas_dist.tasks.benchmarks import Benchmark, Source, register
from neuromas_dist.tasks.sandbox import SandboxLimits

SOURCE = Source("openai/openai_humaneval", "", "test[:50%]", "test[50%:]",
                "trains on HumanEval/0-81, evaluates on HumanEval/82-163 (its only split, cut in two)")
QUESTION = "Complete this Python function:\n```python\n{prompt}```"


def example(row: dict, prefix: str) -> Example:
    for key in ("prompt", "test", "entry_point"):
        if not str(row[key]).strip():
            raise ValueError(f"empty {key!r}")
    meta = {"prompt": row["prompt"], "entry_point": row["entry_point"]}
    return Example(f"{prefix}-{row['task_id']}", QUESTION.format(prompt=row["prompt"]), row["test"], meta)


def task(cfg) -> CodeTask:
    box = cfg.sandbox
    return CodeTask(name="humaneval", answer_type="code", answer_format=ANSWER_FORMATS["code"],
                    limits=SandboxLimits(box.timeout_s, box.memory_mb, box.file_mb), require=box.require)


BENCHMARK = register("humaneval", Benchmark(SOURCE, task, example))
