"""Benchmark of the controller's heartbeat writes (not a test)."""
