"""Majority vote (self-consistency) over a question's sampled answers: the compute-matched
baseline, a single model sampled as many times as a graph makes LLM calls."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from neuromas_dist.analysis.evaluation import sink_samples


def majority_vote(parsed: Sequence[str | None], rewards: Sequence[float]) -> float:
    """Reward of the answer most samples agree on (samples in sample-index order).

    Unparsable answers (None) do not vote; no vote at all scores 0. A tie goes to the tied
    answer that appeared first, i.e. to the lowest sample index: a fixed rule that does
    not look at the gold answer.
    """
    counts: dict[str, int] = {}
    reward_of: dict[str, float] = {}
    for answer, reward in zip(parsed, rewards):
        if answer is None:
            continue
        counts[answer] = counts.get(answer, 0) + 1
        reward_of.setdefault(answer, float(reward))
    if not counts:
        return 0.0
    best = max(counts.values())
    return reward_of[next(a for a in counts if counts[a] == best)]  # dicts keep first-seen order


def vote_scores(table: pa.Table, sink: str, question_ids: Sequence[str], k: int) -> np.ndarray:
    """[Q] majority-vote scores from the first ``k`` sampled passes of each question."""
    out = []
    for qid, samples in zip(question_ids, sink_samples(table, sink, question_ids, ["parsed_answer", "reward"])):
        if len(samples) < k:
            raise ValueError(f"question {qid} has {len(samples)} sampled passes, the vote needs {k}")
        out.append(majority_vote([p for p, _ in samples[:k]], [r for _, r in samples[:k]]))
    return np.array(out, dtype=np.float64)
