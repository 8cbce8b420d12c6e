"""``vlkit demo DIR [--port 7860] [--host 127.0.0.1]``: the web demo of a model folder."""
from __future__ import annotations

import argparse
from typing import Sequence


def command_demo(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="vlkit demo", description="A web page to try a model (FastAPI + uvicorn).")
    parser.add_argument("model", help="model folder, run directory or checkpoint")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 opens it to the network)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    import vlkit
    from vlkit.api.demo import serve

    model = vlkit.load(args.model, device=args.device)
    print(f"vlkit demo of {args.model} on http://{args.host}:{args.port} (Ctrl-C stops it)")
    serve(model, args.host, args.port)
    return 0
