"""`python -m seam_sandbox [--scenario NAME_OR_FILE] [--seed N] [--host H] [--port P]`."""

from __future__ import annotations

import argparse

from seam_sandbox.scenario import load_scenario
from seam_sandbox.server import serve


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m seam_sandbox", description=__doc__)
    parser.add_argument("--scenario", default="default", help="built-in name or YAML/JSON file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args()
    serve(args.host, args.port, load_scenario(args.scenario), args.seed)


if __name__ == "__main__":
    main()
