"""Benchmarks: the scripts that measure microgrid against micrograd and PyTorch."""
