"""Benchmarks of keras_ecl (see BENCHMARKS.md), run from the repository root as modules.

`metrics` scores models in NumPy, `harness` trains a seed's teacher and students, `report`
writes result files and BENCHMARKS.md, `cli` holds the shared flags and `data` puts data sets
into Keras' cache offline (`make data`); every other module is one benchmark
(`python -m benchmarks.digits`) or `run_all`, which runs them all.
"""
