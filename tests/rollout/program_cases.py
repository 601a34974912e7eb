"""Agent programs the program tests run: well-behaved ones that record what they did, and
one of each kind of bad program (each must end only its own sample, with its flag)."""

from __future__ import annotations

import asyncio
import zlib

import openai

CALLS: dict[str, list[str]] = {}  # question -> the agents a program called, in order (what rows must match)


async def _ask(client, agent: str, content: str, **kwargs) -> str:
    response = await client.chat.completions.create(model=agent, messages=[{"role": "user", "content": content}],
                                                    **kwargs)
    return response.choices[0].message.content or ""


def rounds_of(question: str) -> int:
    return zlib.crc32(question.encode()) % 3  # 0, 1 or 2, fixed per question


async def loops(question: str, client) -> str:
    """Calls depend on the question: 0, 1 or 3 solver calls and 0 or 1 checker call; n=2 once."""
    made = CALLS.setdefault(question, [])
    rounds = rounds_of(question)
    if rounds == 0:
        return "The answer is 0."  # no call at all: the sample is scored, with no row
    answer = ""
    for _ in range(rounds):
        answer = await _ask(client, "solver", question)
        made.append("solver")
    if rounds == 2:
        response = await client.chat.completions.create(
            model="verifier", messages=[{"role": "user", "content": f"{question}\n{answer}\nRight?"}], n=2,
            max_tokens=3, stop=["\n"])
        made += ["verifier", "verifier"]
        assert len(response.choices) == 2
    return answer


async def raises(question: str, client) -> str:
    await _ask(client, "solver", question)
    raise ValueError("the program's own bug")


async def returns_a_number(question: str, client) -> str:
    await _ask(client, "solver", question)
    return 4  # type: ignore[return-value]


async def unknown_agent_caught(question: str, client) -> str:
    try:
        await _ask(client, "planner", question)  # not an agent; the program swallows the error
    except Exception:  # noqa: BLE001
        pass
    return "The answer is 4."


async def endless(question: str, client) -> str:
    while True:
        await _ask(client, "solver", question)


async def sleeps(question: str, client) -> str:
    await _ask(client, "solver", question)
    await asyncio.sleep(30)
    return "late"


async def bad_messages(question: str, client) -> str:
    await client.chat.completions.create(model="solver", messages="not a list")
    return "x"


def sync_over_http(question: str, base_url: str) -> str:
    """Plain synchronous OpenAI code (runs in a thread): one solver call."""
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)
    response = client.chat.completions.create(model="solver", messages=[{"role": "user", "content": question}])
    return response.choices[0].message.content or ""


async def solver_only(question: str, client) -> str:
    """The in-process twin of ``sync_over_http``."""
    return await _ask(client, "solver", question)


def not_a_program(question: str) -> str:
    return question
