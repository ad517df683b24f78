"""Accuracy benchmarks of keras_ecl: ERM, KD and ECL over seeds (see BENCHMARKS.md)."""
