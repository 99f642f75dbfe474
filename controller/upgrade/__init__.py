"""The cluster upgrade: database server first, restore of the live environment, resume after a crash.

Modules, each one concept of the guide:

- :mod:`~controller.upgrade.model` — the request, statuses, phases, the persisted step record
- :mod:`~controller.upgrade.preflight` — "Preparing for a live upgrade", checked (changes nothing)
- :mod:`~controller.upgrade.plan` — the guide's order as waves of steps
- :mod:`~controller.upgrade.orchestrator` — operators' commands and the leader's reconcile loop
- :mod:`~controller.upgrade.executor` — driving one run, step by persisted step
- :mod:`~controller.upgrade.local_steps` — what the controller does itself (lock-out, smoke checks …)
- :mod:`~controller.agents.follow` — one agent operation, sent once, followed, timed out
- :mod:`~controller.upgrade.evidence` — backups, upgrade logs, sessions and records, judged
- :mod:`~controller.upgrade.restore` — "Restoring a Live Environment"
- :mod:`~controller.upgrade.checklist` — the guide's "Sample upgrade checklist", filled in
- :mod:`~controller.upgrade.events` — server-sent events with ``Last-Event-ID`` replay
- :mod:`~controller.upgrade.store` — runs, steps and events in the state database
- :mod:`~controller.upgrade.lease` — the controller leader lease
- :mod:`~controller.upgrade.runtime` — a controller's orchestrator, built once and started

The routes (``/api/v1/upgrades``) are :mod:`controller.api.upgrades`; following one agent
operation is :mod:`controller.agents.follow`.

Wiring (controller/app.py): ``app.include_router(controller.api.upgrades.router)`` and, in the
lifespan, ``controller.upgrade.runtime.start(ctx)``.
"""
