"""Agent programs: the general case of what the rollout runs and the learner trains.

A program is a Python function that answers a question by calling named agents through
the OpenAI client's interface, or through an OpenAI-compatible endpoint on 127.0.0.1,
between plain Python (tools, loops, the code sandbox). Every agent is a LoRA adapter on
the one shared base model; every call is a trajectory row. This folder is what a program
*is* (its entry, its agents), as ``graph/`` is what the NeuroMAS DAG is; running one is
``rollout/program/``.
"""
