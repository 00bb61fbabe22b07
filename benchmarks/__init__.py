"""The benchmarks behind docs/results.md and docs/speed.md, each run from the repository root as
``python -m benchmarks.NAME`` (``--help`` for its settings). Not part of the installed package."""
