"""Benchmarks of codeprov, run as real processes on loopback: `python -m bench [NAME ...]`.

Each benchmark is a module with `add_arguments(parser)` and `run(args) -> exit status`, listed
in `bench.__main__.BENCHMARKS`, and writes its figures to `bench/results/NAME.json`
(gitignored). They measure; they are not tests and assert nothing.
"""
