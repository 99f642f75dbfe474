"""Benchmark of the balancer's logon hot path against a bare ASGI app answering a fixed 307.

Run from the repository root: ``bench/balancer/run`` (or ``.venv/bin/python -m bench.balancer``).
"""
