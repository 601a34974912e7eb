"""``solver_verifier.solve`` through the ``openai`` package's own client, pointed at a base URL
as it would be at any OpenAI-compatible server: framework code that takes a base URL trains
as is with ``program.transport: http`` (the rollout worker serves each sample's run on
127.0.0.1 and records every call; the rows equal the in-process client's).
"""

from __future__ import annotations

import openai

from examples.programs import solver_verifier


async def solve(question: str, base_url: str) -> str:
    # max_retries=0: a retried request would be a second call, and a second row
    async with openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0) as client:
        return await solver_verifier.solve(question, client)
