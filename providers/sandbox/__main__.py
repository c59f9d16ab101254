"""Command line for the sandbox: `python -m providers.sandbox --port 8765`."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from providers import SANDBOX_CLASSES
from providers.sandbox.server import make_server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sandbox", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    serve(args)
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs-per-kind", type=int, default=20)
    parser.add_argument(
        "--providers",
        default=",".join(SANDBOX_CLASSES),
        help="comma-separated provider prefixes to serve",
    )
    parser.add_argument(
        "--no-rate-limits", action="store_true", help="do not enforce provider rate limits"
    )
    parser.add_argument(
        "--no-log-bodies", action="store_true", help="keep bodies out of the request log"
    )
    parser.add_argument(
        "--fault-rate", type=float, default=0.0, help="share of API answers that fail (0-1)"
    )
    parser.add_argument(
        "--fault-mix",
        default="",
        help="weights per fault kind, e.g. 500=2,reset=1,expired_cursor=1 (default: all equal)",
    )


def fault_options(rate: float, mix: str, seed: int) -> dict[str, Any] | None:
    if not rate:
        return None
    weights = {}
    for item in filter(None, mix.split(",")):
        kind, _, weight = item.partition("=")
        weights[kind.strip()] = float(weight or 1)
    return {"rate": rate, "mix": weights or None, "seed": seed}


def serve(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.INFO, format="sandbox: %(message)s")
    server = make_server(
        args.host,
        args.port,
        providers=[p for p in args.providers.split(",") if p],
        seed=args.seed,
        jobs_per_kind=args.jobs_per_kind,
        rate_limits=not args.no_rate_limits,
        log_bodies=not args.no_log_bodies,
        faults=fault_options(args.fault_rate, args.fault_mix, args.seed),
    )
    host, port = server.server_address[:2]
    print(f"sandbox listening on http://{host}:{port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    sys.exit(main())
