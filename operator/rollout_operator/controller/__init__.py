"""The I/O half of reconciling: read what kopf's indexes hold, run a pure decision, execute the plan.

kopf watches every kind the operator cares about and keeps slim copies in in-memory indexes
(`handlers.py`); its event handlers only enqueue keys. From there:

- `manager.py`: the `Controller`: work queues, the workers that run reconciles, periodic resync,
  and the view that metrics read;
- `cache.py`: reading kopf's indexes (the observation), plus our own latest writes, which the
  watch may not have delivered yet;
- `rolloutjob.py` / `sglangpool.py`: one reconcile of one object: observe, call
  `reconcile.rolloutjob.decide_job` / `reconcile.sglangpool.decide_pool`, execute the plan, and
  return a `reconcile.common.Result` that says when to look again;
- `children.py`: applying child objects (create by name; on 409 read, check the owner, patch
  only when the spec hash differs), so a restart at any moment creates no duplicates;
- `status.py`: status written with a JSON merge patch that carries the resourceVersion the
  decision was based on, so a decision made from a stale view is rejected (409) and re-made;
- `events.py`: Kubernetes Events, posted on transitions only.

Nothing here decides a phase: that is `reconcile/`'s job.
"""
