import json

from neuromas_dist.driver.metrics import MetricsLogger, read_metrics
from neuromas_dist.driver.sampler import QuestionSampler


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
