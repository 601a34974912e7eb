"""Agent programs: the general case of what the rollout runs and the learner trains.

A program is a Python function that answers a question by calling named agents through
the OpenAI client's interface (``client.py``), or through an OpenAI-compatible endpoint on
127.0.0.1 (``http.py``), between plain Python (tools, loops, the code sandbox). Every agent
is a LoRA adapter on the one shared base model; every call is a trajectory row: the exact
prompt ids the engine saw and the ids and logprobs it sampled (``episode.py``). The
runtime (``runtime.py``) runs a question's samples concurrently on the worker's one engine.
"""
