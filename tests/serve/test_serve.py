"""`python -m neuromas_dist.serve` as a real server process (one vLLM CPU engine), asked with
the `openai` client and raw HTTP: the trained graph's answers node for node, concurrency,
streaming, every bad input, the API key, a dropped stream."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest

pytestmark = [pytest.mark.vllm, pytest.mark.ray]

KEY = "test-key"


def free_port() -> int:
    from neuromas_dist.learner.model import free_port as port

    return port()


@pytest.fixture(scope="module")
def server(trained_run, tmp_path_factory):
    """The trained run served on a free localhost port with an API key; (base url, run dir)."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "neuromas_dist.serve", str(trained_run), "--port", str(port),
                                 "--api-key", KEY, "--model-name", "trained"], stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "NEUROMAS_API_KEY": ""})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(1)
        else:
            pytest.fail("server did not come up: " + log.read_text()[-3000:])
        yield url, trained_run
    finally:
        stop(proc)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()


def client(url: str, key: str = KEY):
    from openai import OpenAI

    return OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=120)


def eval_questions(run_dir: Path) -> dict[str, str]:
    """question id -> text of the run's held-out questions (the synthetic task regenerates them)."""
    from neuromas_dist.run_dir import run_config
    from neuromas_dist.tasks.data import load_task_data

    return {e.id: e.question for e in load_task_data(run_config(run_dir).data).eval}


def test_answers_are_the_evaluation_s_greedy_pass_node_for_node(server):
    """Every held-out question asked at once (as the evaluation batches them): each node's
    text equals what the run's final greedy evaluation wrote for it."""
    url, run_dir = server
    want = {}
    for row in pq.read_table(run_dir / "eval" / "trajectories" / "final_greedy.parquet").to_pylist():
        want.setdefault(row["question_id"], {})[row["node"]] = row["text"]
    questions = eval_questions(run_dir)
    from openai import AsyncOpenAI

    async def ask_all():
        api = AsyncOpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=120)
        return await asyncio.gather(*(api.chat.completions.create(
            model="trained", messages=[{"role": "user", "content": questions[q]}]) for q in want))

    answers = asyncio.run(ask_all())
    assert len(answers) == len(want) == 8
    for qid, resp in zip(want, answers):
        nodes = resp.model_extra["neuromas"]["nodes"][0]
        assert {n: v["text"] for n, v in nodes.items()} == want[qid], qid
        assert resp.choices[0].message.content == want[qid]["L1N0"]
        assert resp.usage.completion_tokens == sum(v["completion_tokens"] for v in nodes.values()) > 0


def test_sixteen_concurrent_requests_and_n_samples(server):
    url, _ = server
    from openai import AsyncOpenAI

    async def many():
        api = AsyncOpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=180)
        return await asyncio.gather(*(api.chat.completions.create(
            model="trained", messages=[{"role": "user", "content": f"What is {i} + {i}?"}], temperature=1.0,
            n=2, seed=i) for i in range(16)))

    answers = asyncio.run(many())
    assert len(answers) == 16 and all(len(a.choices) == 2 for a in answers)
    assert all(len(a.model_extra["neuromas"]["nodes"]) == 2 for a in answers)
    # a seeded request draws alike every time
    again = client(url).chat.completions.create(model="trained", temperature=1.0, n=2, seed=3,
                                                messages=[{"role": "user", "content": "What is 3 + 3?"}])
    assert [c.message.content for c in again.choices] == [c.message.content for c in answers[3].choices]


def test_streaming_yields_the_non_streaming_text(server):
    url, _ = server
    api = client(url)
    messages = [{"role": "system", "content": "ignored by the graph"}, {"role": "user", "content": "What is 2 + 5?"}]
    whole = api.chat.completions.create(model="trained", messages=messages)
    chunks = list(api.chat.completions.create(model="trained", messages=messages, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content and text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    assert chunks[-1].usage.total_tokens == whole.usage.total_tokens


@pytest.mark.parametrize("body,status,message", [
    ({"model": "trained", "messages": [{"role": "system", "content": "hi"}]}, 400, "no user message"),
    ({"model": "trained", "messages": [{"role": "user", "content": "x " * 5000}]}, 400, "model.max_model_len="),
    ({"model": "nope", "messages": [{"role": "user", "content": "hi"}]}, 404, "model 'nope' does not exist"),
    ({"model": "trained", "messages": [{"role": "user", "content": "hi"}], "temperature": 5}, 422, "temperature"),
    ({"model": "trained", "messages": [{"role": "user", "content": "hi"}], "n": 0}, 422, "n:"),
    ({"model": "trained"}, 422, "messages"),
    ("{not json", 400, "not valid JSON"),
])
def test_bad_input_is_one_line_with_its_status(server, body, status, message):
    url, _ = server
    raw = body if isinstance(body, str) else json.dumps(body)
    r = httpx.post(f"{url}/v1/chat/completions", content=raw, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    assert r.status_code == status, r.text
    error = r.json()["error"]["message"]
    assert message in error and "\n" not in error
    assert httpx.get(f"{url}/health", timeout=10).status_code == 200  # still serving


def test_the_api_key_is_enforced(server):
    from openai import AuthenticationError

    url, _ = server
    with pytest.raises(AuthenticationError):
        client(url, key="wrong").models.list()
    assert [m.id for m in client(url).models.list().data] == ["trained"]


def test_a_dropped_stream_frees_its_requests(server):
    url, _ = server
    body = {"model": "trained", "stream": True, "messages": [{"role": "user", "content": "What is 4 + 4?"}],
            "max_tokens": 24, "n": 4}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {KEY}"}) as r:
        next(r.iter_lines())  # the first event, then hang up
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        health = httpx.get(f"{url}/health", timeout=10).json()
        if health["requests_in_flight"] == 0 and health["engine_requests"] == 0:
            break
        time.sleep(0.5)
    assert health["requests_in_flight"] == 0 and health["engine_requests"] == 0, health


def test_lm_eval_harness_evaluates_the_served_graph(server, tmp_path, monkeypatch):
    """EleutherAI's harness, `local-chat-completions` against the server, on a generation
    task defined over a local file of the run's held-out questions: every response it
    records is the graph's greedy sink text, and its exact match scores them."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    url, run_dir = server
    sink_text = {}
    for row in pq.read_table(run_dir / "eval" / "trajectories" / "final_greedy.parquet").to_pylist():
        if row["node"] == "L1N0":
            sink_text[row["question_id"]] = (row["answer_text"], row["reward"])
    questions = eval_questions(run_dir)
    from neuromas_dist.run_dir import run_config
    from neuromas_dist.tasks.data import load_task_data

    gold = {e.id: e.answer for e in load_task_data(run_config(run_dir).data).eval}
    data = tmp_path / "heldout.jsonl"
    data.write_text("".join(json.dumps({"id": q, "question": questions[q], "answer": gold[q]}) + "\n"
                            for q in sink_text))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "neuromas_heldout.yaml").write_text(f"""task: neuromas_heldout
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: []
  max_gen_toks: 64
  do_sample: false
filter_list:
  - name: answer
    filter:
      - function: regex
        regex_pattern: "The answer is (-?[0-9]+)"
      - function: take_first
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
""")
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    out = lm_eval.simple_evaluate(
        model="local-chat-completions", apply_chat_template=True, log_samples=True,
        model_args=f"model=trained,base_url={url}/v1/chat/completions,num_concurrent=4,max_retries=1,"
                   f"tokenized_requests=False",
        tasks=["neuromas_heldout"], task_manager=TaskManager(include_path=str(tmp_path / "tasks")))
    samples = out["samples"]["neuromas_heldout"]
    assert len(samples) == len(sink_text) == 8
    for s in samples:
        assert s["resps"][0][0] == sink_text[s["doc"]["id"]][0], s["doc"]["id"]
    score = out["results"]["neuromas_heldout"]["exact_match,answer"]
    assert score == pytest.approx(sum(s["exact_match"] for s in samples) / 8)


def test_two_ray_serve_replicas_share_the_load(trained_run, tmp_path):
    """`--replicas 2`: two engines under Ray Serve (a Ray of its own in the server process),
    behind one port; concurrent requests reach both and get the graph's answers."""
    port = free_port()
    log = tmp_path / "replicas.log"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "neuromas_dist.serve", str(trained_run), "--port", str(port),
                                 "--replicas", "2", "--model-name", "trained"], stdout=out, stderr=subprocess.STDOUT,
                                env={**env, "NEUROMAS_API_KEY": ""})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while "Ray Serve replicas" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(2)
        questions = list(eval_questions(trained_run).values())

        async def ask_all():
            async with httpx.AsyncClient(timeout=300) as http:
                return await asyncio.gather(*(http.post(f"{url}/v1/chat/completions", json={
                    "model": "trained", "messages": [{"role": "user", "content": questions[i % 8]}]})
                    for i in range(24)))

        answers = asyncio.run(ask_all())
        assert [r.status_code for r in answers] == [200] * 24
        assert len({r.headers["x-neuromas-replica"] for r in answers}) == 2
        by_question = {}
        for i, r in enumerate(answers):  # greedy: both replicas answer a question alike
            by_question.setdefault(i % 8, set()).add(r.json()["choices"][0]["message"]["content"])
        assert all(len(texts) == 1 for texts in by_question.values())
    finally:
        stop(proc)
