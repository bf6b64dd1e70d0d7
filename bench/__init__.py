"""Benchmarks: they print figures (`make bench`), they are not tests."""
