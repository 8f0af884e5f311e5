"""Which workers the app's analyses go to, from the environment:

- DEEPFAKE_RAY_ADDRESS: a Ray cluster's address (HOST:PORT, or `auto`); unset: worker
  processes on this machine.
- DEEPFAKE_ANALYSIS_WORKERS: `process` (the default: worker processes, or Ray with the address
  above) or `inline`: in the server process itself, as the app ran before it had workers (kept
  as the baseline benchmarks/bench_load.py measures against, and for debugging).
- DEEPFAKE_ANALYSIS_SLOTS: analyses at once (default: one per two cores, at least one).
- DEEPFAKE_WORKER_NICE: how much lower a local worker's CPU priority is than the server's
  (default 10).
- DEEPFAKE_WORKER_THREADS: TensorFlow threads per worker (default: every core locally, 1 on Ray).
- DEEPFAKE_WORKER_TIMEOUT: seconds of silence after which a worker is taken for hung (15)."""
from __future__ import annotations

import os

RAY_ADDRESS_ENV = "DEEPFAKE_RAY_ADDRESS"
SLOTS_ENV = "DEEPFAKE_ANALYSIS_SLOTS"
NICE_ENV = "DEEPFAKE_WORKER_NICE"
THREADS_ENV = "DEEPFAKE_WORKER_THREADS"
TIMEOUT_ENV = "DEEPFAKE_WORKER_TIMEOUT"
WORKERS_ENV = "DEEPFAKE_ANALYSIS_WORKERS"


def slots() -> int:
    return int(os.environ.get(SLOTS_ENV) or max(1, (os.cpu_count() or 2) // 2))


def start_workers(models_dir: str | None, slots_wanted: int | None = None):
    """The app's workers as the environment asks for them (`slots_wanted`, default slots());
    started lazily, one per slot."""
    count = slots_wanted or slots()
    timeout = float(os.environ.get(TIMEOUT_ENV) or 15.0)
    threads = int(os.environ.get(THREADS_ENV) or 0)
    address = os.environ.get(RAY_ADDRESS_ENV)
    kind = os.environ.get(WORKERS_ENV) or "process"
    if kind not in ("process", "inline"):
        raise ValueError(f"{WORKERS_ENV} must be 'process' or 'inline', not {kind!r}")
    if kind == "inline":
        from .inline import InlineWorkers

        return InlineWorkers(models_dir, threads=threads)
    if address:
        from .ray_workers import RayWorkers

        return RayWorkers(address, models_dir, slots=count, threads=threads or 1,
                          timeout=timeout)
    from .local import LocalWorkers

    return LocalWorkers(models_dir, slots=count, nice=int(os.environ.get(NICE_ENV) or 10),
                        threads=threads, timeout=timeout)
