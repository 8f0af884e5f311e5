"""The Ray engine: one actor per worker, each loading the detector and the models once and then
analysing video after video. Without an address it starts a local Ray sized to this machine;
with one it joins that cluster, whose nodes must all see the videos (and this checkout, with
its models/) at the same paths.

The driver hands each actor one video at a time, so a slow clip never holds others back and a
dead actor's loss is exactly one video: that video goes back in the queue on a fresh actor, up
to `max_attempts` tries, then it is reported failed with the reason."""
from __future__ import annotations

import os
from collections import Counter, deque
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import DetectorError, first_line
from .jobs import Outcome, ScanJob
from .scanner import ScannerConfig, VideoScanner

# Peak resident memory of one worker with the default models, measured by
# benchmarks/bench_scan.py: 1.36-1.43 GiB on generated 640x360 clips, up to 1.69 GiB on FF++
# clips (480p-1080p); docs/scaling.md. Sizing leaves headroom above that.
WORKER_MEMORY_BYTES = 2 * 2**30
DEFAULT_ATTEMPTS = 3
PROJECT_ROOT = Path(__file__).resolve().parents[2]


class ScanEngineError(DetectorError):
    """The engine itself could not run (no Ray, no cluster at the address, workers that cannot
    load the models)."""


def import_ray():
    try:
        import ray
    except ImportError:
        raise ScanEngineError("--engine ray needs Ray, which is optional for the app: "
                              "pip install -r requirements-dev.txt (or pip install ray)") from None
    return ray


class ScanActor:
    """Lives in a Ray worker process (`ray.remote` is applied when the engine starts)."""

    def __init__(self, config: ScannerConfig):
        import cv2

        cv2.setNumThreads(1)     # a worker has its own CPUs; OpenCV's pool would take them all
        self.scanner = VideoScanner(config)

    def ready(self) -> tuple[int, list[str]]:
        return os.getpid(), self.scanner.model_names

    def scan(self, job: ScanJob) -> Outcome:
        return self.scanner.scan(job)


def _authenticate_like_ray_start() -> None:
    """`ray start --head` turns on token authentication when this machine has a Ray token
    (~/.ray/auth_token or $RAY_AUTH_TOKEN) and RAY_AUTH_MODE is unset; `ray.init(address=...)`
    does not, and its connection is then refused. Joining takes the same decision `ray start`
    took, through Ray's own function for it."""
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available)
    except ImportError:         # a Ray without token authentication
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def start_or_join(address: str | None) -> None:
    """Join the Ray cluster at `address`, or start a Ray of this machine's own (loopback only);
    either way its workers import this checkout's `core`."""
    ray = import_ray()
    runtime_env = {"env_vars": {"PYTHONPATH": os.pathsep.join(
        p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p)}}
    try:
        if address:
            _authenticate_like_ray_start()
            ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
        else:
            # "local": always a new instance, never a cluster that happens to run here.
            # Loopback: a machine-local Ray has no reason to listen on the network.
            ray.init(address="local", num_cpus=os.cpu_count() or 1, include_dashboard=False,
                     log_to_driver=False, runtime_env=runtime_env,
                     _node_ip_address="127.0.0.1")
    except (ConnectionError, RuntimeError, ValueError) as error:
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise ScanEngineError(f"could not start or join {where}: {error}") from None


def default_workers(cpus: float, memory_bytes: float) -> int:
    """As many workers as there are CPUs, and no more than the memory holds."""
    return max(1, min(int(cpus), int(memory_bytes // WORKER_MEMORY_BYTES)))


class RayEngine:
    name = "ray"

    def __init__(self, config: ScannerConfig, *, address: str | None = None,
                 workers: int | None = None, max_attempts: int = DEFAULT_ATTEMPTS):
        from dataclasses import replace

        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        ray = self._ray = import_ray()
        # Each worker reserves as many CPUs as it runs TensorFlow threads (one by default).
        self.config = config if config.threads else replace(config, threads=1)
        self.max_attempts = max_attempts
        self.address = address
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            start_or_join(address)
        resources = ray.available_resources()
        threads = self.config.threads
        self.workers = workers or default_workers(resources.get("CPU", 1) / threads,
                                                  resources.get("memory", WORKER_MEMORY_BYTES))
        self._actor_class = ray.remote(num_cpus=threads, max_restarts=0)(ScanActor)
        self.actors = [self._start_actor() for _ in range(self.workers)]
        self.pids: dict = {}
        self._in_flight: dict = {}
        try:
            ready = ray.get([a.ready.remote() for a in self.actors])
        except ray.exceptions.RayError as error:
            self.close()
            raise ScanEngineError(f"Ray workers could not start: {first_line(error)[:300]}") from None
        self.pids = {actor: pid for actor, (pid, _) in zip(self.actors, ready)}
        self.model_names = ready[0][1]

    def describe(self) -> str:
        where = "a local Ray" if self._owns_ray and not self.address else "the Ray cluster"
        return (f"Ray engine: {self.workers} workers on {where}, "
                f"{self.config.threads} TensorFlow thread(s) each")

    def _start_actor(self):
        return self._actor_class.remote(self.config)

    def run(self, jobs: Sequence[ScanJob], on_outcome: Callable[[Outcome], None]) -> None:
        ray = self._ray
        pending = deque(jobs)
        attempts: Counter = Counter()
        in_flight = self._in_flight = {}     # ObjectRef -> (job, actor)
        idle = list(self.actors)
        while pending or in_flight:
            while idle and pending:
                actor, job = idle.pop(), pending.popleft()
                attempts[job.index] += 1
                in_flight[actor.scan.remote(job)] = (job, actor)
            (ref,), _ = ray.wait(list(in_flight), num_returns=1)
            job, actor = in_flight.pop(ref)
            try:
                outcome = ray.get(ref)
            except ray.exceptions.RayError as error:
                idle.append(self._replace(actor))
                if attempts[job.index] < self.max_attempts:
                    pending.appendleft(job)
                    continue
                # Killed every time it was tried: treated like an unusable video.
                outcome = Outcome(job, video_error=True,
                                  error=f"its worker died on each of {attempts[job.index]} "
                                        f"tries (last: {first_line(error)[:300]})")
            else:
                idle.append(actor)
            outcome.attempts = attempts[job.index]
            on_outcome(outcome)

    def busy_pids(self) -> list[int]:
        """Process ids of the workers analysing a video now (for fault-injection tests)."""
        return [self.pids[actor] for _, actor in self._in_flight.values() if actor in self.pids]

    def _replace(self, dead):
        self.actors.remove(dead)
        self.pids.pop(dead, None)
        kill_actors(self._ray, [dead])
        fresh = self._start_actor()
        self.actors.append(fresh)
        return fresh

    def close(self) -> None:
        kill_actors(self._ray, self.actors)
        self.actors = []
        if self._owns_ray:
            self._ray.shutdown()


def kill_actors(ray, actors) -> None:
    """Stop the actors for good, whether still alive or already dead."""
    for actor in actors:
        try:
            ray.kill(actor, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass
