"""Benchmarks: `make bench`. Each compares Parley with a baseline measured in the same run."""
