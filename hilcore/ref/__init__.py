"""Slow, obviously correct references written from the formulas in DESIGN.md. Tests and benchmarks import them."""
