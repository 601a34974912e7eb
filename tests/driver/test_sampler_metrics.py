import json

from neuromas_dist.driver.metrics import MetricsLogger
from neuromas_dist.driver.sampler import QuestionSampler
from neuromas_dist.run_dir import read_metrics


def test_sampler_resume_draws_the_same_questions():
    items = list(range(10))
    a = QuestionSampler(items, seed=3)
    first = a.next_batch(7)
    state = a.state_dict()
    rest_a = a.next_batch(8)  # crosses into epoch 1
    b = QuestionSampler(items, seed=3)
    b.load_state_dict(state)
    assert b.next_batch(8) == rest_a
    assert sorted(first + rest_a[:3]) == items  # epoch 0 is a permutation
    assert a.epoch == 1


def test_a_batch_crossing_an_epoch_never_holds_a_question_twice():
    """10 questions, 4 per step: every third batch crosses an epoch. No batch repeats a
    question (they would share request seeds, sample_id and loo group), every epoch still
    draws each question once, and a sampler restored mid-epoch (after a swap) draws on alike."""
    items = list(range(10))
    a = QuestionSampler(items, seed=0)
    batches = [a.next_batch(4) for _ in range(25)]
    assert all(len(set(b)) == 4 for b in batches)
    flat = [q for b in batches for q in b]
    assert all(sorted(flat[e * 10:(e + 1) * 10]) == items for e in range(10))
    b = QuestionSampler(items, seed=0)
    for _ in range(3):
        b.next_batch(4)  # the third batch crossed into epoch 1
    state = json.loads(json.dumps(b.state_dict()))  # as a checkpoint stores it
    c = QuestionSampler(items, seed=0)
    c.load_state_dict(state)
    assert [c.next_batch(4) for _ in range(10)] == batches[3:13]


def test_more_questions_per_step_than_questions_is_refused():
    import pytest

    with pytest.raises(ValueError, match="5 questions per step but only 4"):
        QuestionSampler([1, 2, 3, 4], seed=0).next_batch(5)


def test_metrics_truncate_on_resume(tmp_path):
    log = MetricsLogger(tmp_path, tensorboard=False)
    for step in range(1, 5):
        log.log(step, {"rollout/reward_mean": step / 10, "bad": float("nan")})
    log.close()
    log = MetricsLogger(tmp_path, tensorboard=True, resume_step=2)
    log.log(3, {"rollout/reward_mean": 0.33})
    log.close()
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert rows[-1]["rollout/reward_mean"] == 0.33
    assert rows[0]["bad"] is None
    assert json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])["step"] == 1
    assert list((tmp_path / "tensorboard").iterdir())
