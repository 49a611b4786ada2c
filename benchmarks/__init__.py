"""Benchmarks of ingestion, training, serving and model quality: ``python -m benchmarks.run``.

Results land in ``build/bench/results.json`` and ``build/bench/results.md``.
"""
