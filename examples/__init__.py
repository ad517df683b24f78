"""Runnable examples, importable as a package so the benchmarks reuse the MNIST-1D demo."""
