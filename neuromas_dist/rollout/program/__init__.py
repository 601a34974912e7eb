"""Running agent programs on the rollout worker's engine: the episode that records each
call (``episode.py``), the OpenAI-style client a program gets (``client.py``), the
OpenAI-compatible loopback endpoint (``http.py``) and the per-sample runtime (``runtime.py``)."""
