"""`python -m bench NAME [options]` runs one benchmark; `python -m bench` runs them all."""

from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType

# name -> module with add_arguments(parser) and run(args) -> int. Add new benchmarks here.
BENCHMARKS = {
    "ratelimit": "bench.ratelimit",
    "scale": "bench.scale",
    "pipeline": "bench.pipeline",
    "overhead": "bench.overhead",
    "footprint": "bench.footprint",
    "receiver": "bench.receiver",
    "events": "bench.events",
    "guarded": "bench.guarded",
    "multilock": "bench.multilock",
    "report": "bench.report",  # last: the targets table of the whole run
}


def _module(name: str) -> ModuleType:
    return importlib.import_module(BENCHMARKS[name])


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    sub = top.add_subparsers(dest="benchmark", metavar="NAME")
    for name in BENCHMARKS:
        module = _module(name)
        summary = (module.__doc__ or name).strip().splitlines()[0]
        module.add_arguments(sub.add_parser(
            name, help=summary, description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter))
    return top


def main(argv: list[str] | None = None) -> int:
    top = parser()
    args = top.parse_args(argv)
    if args.benchmark is not None:
        return int(_module(args.benchmark).run(args))
    status = 0
    for name in BENCHMARKS:  # no name: every benchmark with its defaults
        print(f"== {name}", flush=True)
        status |= int(_module(name).run(top.parse_args([name])))
    return status


if __name__ == "__main__":
    sys.exit(main())
