"""Using a trained graph: ``python -m neuromas_dist.serve RUN_DIR`` (an OpenAI-compatible
server: ``openai_api``; Ray Serve replicas: ``ray_serve``), on ``graph.ServedGraph``."""
