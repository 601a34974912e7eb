"""Tasks: examples, answer extraction, rewards, synthetic generators and data loading."""

from neuromas_dist.tasks.answers import (
    answers_match,
    extract_boxed,
    extract_choice,
    extract_last_number,
    extract_number_answer,
    normalize_number,
)
from neuromas_dist.tasks.base import Example, RewardFn, Score, Task, make_task
from neuromas_dist.tasks.data import DataError, TaskData, load_examples, load_hf_examples, load_task_data
from neuromas_dist.tasks.synthetic import SYNTHETIC_ANSWER_FORMAT, make_synthetic, synthetic_corpus, synthetic_task

__all__ = [
    "DataError", "Example", "RewardFn", "SYNTHETIC_ANSWER_FORMAT", "Score", "Task", "TaskData",
    "answers_match", "extract_boxed", "extract_choice", "extract_last_number", "extract_number_answer",
    "load_examples", "load_hf_examples", "load_task_data", "make_synthetic", "make_task",
    "normalize_number", "synthetic_corpus", "synthetic_task",
]
