"""Rewards named by ``data.reward_fn`` in tests/tasks/test_plugins.py (importable by name)."""


def gold_mentioned(question: str, sink_text: str, gold: str) -> float:
    """0.5 for a reply that mentions the gold answer anywhere, 1.0 when it ends with it."""
    text = sink_text.strip().rstrip(".")
    return 1.0 if text.endswith(gold) else 0.5 if gold in text else 0.0


def raises(question: str, sink_text: str, gold: str) -> float:
    raise RuntimeError("checker down")


def not_a_number(question: str, sink_text: str, gold: str) -> float:
    return float("nan")


NOT_CALLABLE = 3


def raises_on_stamps(question: str, sink_text: str, gold: str) -> float:
    """The example's reward, except that it raises on questions about stamps: a planted
    fault whose count tests/test_examples.py finds in metrics.jsonl."""
    from examples.own.rewards import close_enough

    if "stamps" in question:
        raise RuntimeError("planted: the checker is down for stamps")
    return close_enough(question, sink_text, gold)
