"""``python -m neuromas_dist.serve RUN_DIR [--host 127.0.0.1] [--port 8000] [--api-key KEY]
[--model-name NAME] [--replicas N] [key=value ...]``: the trained graph behind an
OpenAI-compatible API (``serve/openai_api.py``). One vLLM engine holds the base model and
every node's final adapter; all requests share it. ``--replicas N`` runs N copies under
Ray Serve (one engine each, placed by Ray) behind one HTTP port. A bad run directory or
override is one line and exit code 2."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from neuromas_dist.run_dir import check_run_dir

EXIT_BAD_INPUT = 2


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m neuromas_dist.serve", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides of the run's config")
    p.add_argument("--host", default="127.0.0.1", help="listen address (localhost unless told otherwise)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=os.environ.get("NEUROMAS_API_KEY") or None,
                   help="require 'Authorization: Bearer KEY' (default: $NEUROMAS_API_KEY; none = open)")
    p.add_argument("--model-name", default=None, help="the model id clients name (default: the run dir's name)")
    p.add_argument("--replicas", type=int, default=0, help="serve N replicas with Ray Serve (0 = one in-process "
                                                           "server, no Ray)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    run_dir = Path(args.run_dir)
    name = args.model_name or run_dir.resolve().name
    try:
        check_run_dir(run_dir)  # before the stack loads: a wrong path answers at once
        from neuromas_dist.serve.graph import ServedGraph

        graph = ServedGraph(run_dir, args.overrides)
    except (ValueError, FileNotFoundError) as exc:  # RunDirError, ConfigError, TopologyError
        print(f"serve: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.replicas > 0:
        from neuromas_dist.serve.ray_serve import serve_replicas

        return serve_replicas(graph, args.overrides, name, args.api_key, args.replicas, args.host, args.port)
    import uvicorn

    from neuromas_dist.analysis.run_eval import describe
    from neuromas_dist.serve.openai_api import build_app

    print(f"[serve] {run_dir}: {describe(graph.topology)} as model {name!r} on http://{args.host}:{args.port}"
          + (" (API key required)" if args.api_key else ""), flush=True)
    uvicorn.run(build_app(graph, name, args.api_key), host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
