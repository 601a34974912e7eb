"""A coder that runs its code before answering: one agent, a tool between its calls.

The coder completes the function; the program runs the reply against the docstring's own
examples (``>>> f(x)`` / expected value) in the code sandbox, the jailed check the HumanEval
reward uses, and when they fail it tells the coder what happened and asks again, in the same
conversation. The examples are the prompt's, never the task's hidden tests: the reward still
comes from those alone. For ``data.task: humaneval`` (question: "Complete this Python
function: ```python ...```").
"""

from __future__ import annotations

import re

from neuromas_dist.tasks.sandbox import check_async, job_of

AGENT = "coder"
ROUNDS = 1  # retries after a failed self-test
_FUNCTION = re.compile(r"```python\n(.*?)```", re.S)
_ENTRY = re.compile(r"^def (\w+)\(", re.M)
_EXAMPLE = re.compile(r"^\s*>>> (.+)\n\s*(?!>>>)(\S.*)$", re.M)


async def solve(question: str, client) -> str:
    conversation = [{"role": "user", "content": question}]
    code = await _reply(client, conversation)
    tests = self_tests(question)
    for _ in range(ROUNDS if tests else 0):
        prompt, entry, check = tests
        outcome = await check_async(job_of(prompt, fenced(code), check, entry))
        if outcome.passed:
            break
        conversation += [{"role": "assistant", "content": code}, {"role": "user", "content": (
            f"Running the docstring's examples on it: {outcome.status}. {outcome.detail[:300]}\nFix the function.")}]
        code = await _reply(client, conversation)
    return code


def self_tests(question: str) -> tuple[str, str, str] | None:
    """(the function's prompt, its name, a ``check(candidate)`` of its docstring's examples);
    None when the question has no function with examples."""
    found = _FUNCTION.search(question)
    entry = _ENTRY.search(found.group(1)) if found else None
    examples = _EXAMPLE.findall(found.group(1)) if found else []
    if entry is None or not examples:
        return None
    name = entry.group(1)
    asserts = "".join(f"    assert {call.replace(name + '(', 'candidate(', 1)} == {want}\n" for call, want in examples)
    return found.group(1), name, f"def check(candidate):\n{asserts}"


def fenced(reply: str) -> str:
    """The code of a reply: its first fenced block, else the reply itself (a continued body)."""
    block = re.search(r"```(?:python)?\n(.*?)```", reply, re.S)
    return block.group(1) if block else reply


async def _reply(client, messages: list[dict]) -> str:
    response = await client.chat.completions.create(model=AGENT, messages=messages)
    return response.choices[0].message.content or ""
