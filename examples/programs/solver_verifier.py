"""A solver and a verifier, each its own LoRA adapter, written against the OpenAI client.

The solver answers; the verifier reads the answer and says yes or no; on a no the solver
is told so and answers again, in the same conversation (at most ``ROUNDS`` retries). One
terminal reward (the task's score of the returned text) trains both agents: the verifier
is credited for sending the solver back when that led to a right answer, and blamed when
it did not. Train it: ``python -m neuromas_dist.launch --config examples/programs/solver_verifier.yaml``.
"""

from __future__ import annotations

ROUNDS = 1  # retries after a "no"


async def solve(question: str, client) -> str:
    conversation = [{"role": "user", "content": f"{question}\nEnd with: The answer is N."}]
    answer = await _reply(client, "solver", conversation)
    for _ in range(ROUNDS):
        verdict = await _reply(client, "verifier", [{"role": "user", "content": (
            f"Question: {question}\nProposed answer: {answer}\nIs the proposed answer right? Reply yes or no.")}],
            max_tokens=4)
        if verdict.strip().lower().startswith("yes"):
            break
        conversation += [{"role": "assistant", "content": answer},
                         {"role": "user", "content": "A checker says this is wrong. Solve it again."}]
        answer = await _reply(client, "solver", conversation)
    return answer


async def _reply(client, agent: str, messages: list[dict], max_tokens: int | None = None) -> str:
    response = await client.chat.completions.create(model=agent, messages=messages, max_tokens=max_tokens)
    return response.choices[0].message.content or ""
