"""A reward of your own, named in a config as ``data.reward_fn: examples.own.rewards:close_enough``.

Called with the question, the sink's text and the gold answer; returns a float (an
exception or a non-finite value scores 0 and is counted in ``rollout/flag_reward_fn_*``).
"""

from __future__ import annotations

import re


def close_enough(question: str, text: str, gold: str) -> float:
    """1 for the right number, 0.5 when the last number is off by one, else 0."""
    numbers = re.findall(r"-?\d+", text)
    if not numbers:
        return 0.0
    diff = abs(int(numbers[-1]) - int(gold))
    return 1.0 if diff == 0 else 0.5 if diff == 1 else 0.0
