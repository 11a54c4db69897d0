"""Slow, obviously correct references written from the formulas in docs/design.md. Tests and benchmarks import them."""
