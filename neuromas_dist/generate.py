"""``python -m neuromas_dist.generate RUN_DIR --input FILE --output FILE [key=value ...]``:
the trained graph over every question of a file.

Input: JSONL or Parquet rows with the question in ``--question-field`` (default: the run's
``data.question_field``) or built by the run's ``data.prompt_template``. Output (JSONL or
Parquet, by suffix): one row per input row, its fields kept, plus ``answer`` (the sink's
text), ``parsed_answer`` (what the run's task extracts from it), ``node_<name>`` (every
node's text) and ``finish_<name>``. Greedy unless ``--temperature``; one engine in this
process, every question in flight at once (bounded by ``--concurrency``), a progress bar.
Bad input is one line on stderr and exit code 2; nothing is written then.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any, Sequence

EXIT_BAD_INPUT = 2


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m neuromas_dist.generate", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides of the run's config")
    p.add_argument("--input", required=True, help="questions: .jsonl/.json or .parquet")
    p.add_argument("--output", required=True, help="results: .jsonl or .parquet")
    p.add_argument("--question-field", default=None)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--concurrency", type=int, default=256, help="questions in flight at once")
    return p.parse_args(argv)


def output_row(row: dict, result: Any, task: Any) -> dict[str, Any]:
    """The input row, the answer and each call's text and finish (``node_<agent>``; a program's
    later calls of an agent ``node_<agent>#<call_index>``)."""
    out = {**row, "answer": result.answer, "parsed_answer": task.extract(result.answer)}
    for call in result.calls:
        name = call.node if call.call_index == 0 else f"{call.node}#{call.call_index}"
        out[f"node_{name}"], out[f"finish_{name}"] = call.text, call.finish_reason
    return out


async def generate(graph: Any, questions: list[tuple[dict, str]], temperature: float, concurrency: int
                   ) -> list[dict[str, Any]]:
    from tqdm import tqdm

    from neuromas_dist.serve.graph import Params

    await graph.start()
    limit = asyncio.Semaphore(max(concurrency, 1))
    bar = tqdm(total=len(questions), desc="generate", unit="question", file=sys.stderr)

    async def one(row: dict, question: str) -> dict[str, Any]:
        async with limit:
            (result,) = await graph.answer(question, 1, Params(temperature=temperature))
        bar.update(1)
        return output_row(row, result, graph.task)

    try:
        return list(await asyncio.gather(*(one(row, q) for row, q in questions)))
    finally:
        bar.close()
        await graph.shutdown()


def write_rows(rows: list[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        with path.open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from neuromas_dist.analysis.run_eval import describe
    from neuromas_dist.serve.graph import ServedGraph
    from neuromas_dist.tasks.data import load_questions

    output = Path(args.output)
    try:
        if output.suffix.lower() not in (".jsonl", ".json", ".parquet"):
            raise ValueError(f"--output {output}: use a .jsonl or .parquet file")
        graph = ServedGraph(Path(args.run_dir), args.overrides)
        d = graph.cfg.data
        questions = load_questions(args.input, question_field=args.question_field or d.question_field,
                                   prompt_template=d.prompt_template)
    except (ValueError, FileNotFoundError) as exc:  # RunDirError, ConfigError, DataError
        print(f"generate: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    rows = asyncio.run(generate(graph, questions, args.temperature, args.concurrency))
    write_rows(rows, output)
    print(f"[generate] {len(rows)} questions through {args.run_dir}'s {describe(graph.topology)} -> {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
