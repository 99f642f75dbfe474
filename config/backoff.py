"""Back-off with jitter: how every retry loop of crmcluster waits (``tenacity`` underneath).

    wait = backoff(first=10, cap=60, jitter=5)   # 10, 20, 40, 60, 60 … each + up to 5 s at random

The jitter is added *after* the cap, so clients that failed together — every agent when the
controller restarts — come back spread over ``jitter`` seconds instead of all at once at the cap.
Callers build a ``tenacity.AsyncRetrying`` with this wait and their own ``sleep`` (injected in
tests, so the waits are recorded instead of slept).
"""

from __future__ import annotations

from tenacity.wait import wait_base, wait_exponential, wait_random


def backoff(*, first: float, cap: float, jitter: float) -> wait_base:
    """Waits of ``first``, twice that, four times … up to ``cap``, each plus ``[0, jitter)`` seconds."""
    wait: wait_base = wait_exponential(multiplier=first, max=cap)
    if jitter > 0:
        wait = wait + wait_random(0, jitter)
    return wait
