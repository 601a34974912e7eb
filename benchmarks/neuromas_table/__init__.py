"""The paper's comparisons in one command: single-LLM RL with matched LoRA parameters,
NeuroMAS-3, NeuroMAS-7 from scratch and grown (both growth modes), and compute-matched
majority-vote baselines, with seeds and bootstrap intervals.

    python -m benchmarks.neuromas_table [--config FILE] [--seeds N] [--quick] [key.path=value ...]

``arms`` turns one NeuroMAS-3 config into every training run the table needs, ``runner``
runs them (one ``neuromas_dist.launch`` process each, so a cluster run is the same
command under ``ray job submit``), ``results`` reads their held-out passes back into the
table, ``plots`` draws it.
"""
