"""Analyses on a Ray cluster: one actor per slot, each an `Analyst` holding the detector and the
models, joined through the scan's own Ray start-up (core.scan.ray_engine.start_or_join), so every
node must see this checkout and its models/ at the same paths. The actor answers `state` while it
analyses (two threads), which is how the app follows its progress and notices it has stopped
answering. A dead or silent actor fails the analysis it had with one line and is replaced."""
from __future__ import annotations

import os
import queue

from core.errors import first_line
from core.scan.ray_engine import import_ray, kill_actors, start_or_join

from .protocol import Blobs, WorkerError, WorkerLostError, WorkerTimeoutError, error_reply
from .workers import STARTUP_SECONDS, Progress, Workers

POLL_SECONDS = 0.5


class AnalystActor:
    """Lives in a Ray worker process (`ray.remote` is applied when the workers start)."""

    def __init__(self, models_dir: str | None, nice: int, threads: int):
        if nice:
            os.nice(nice)
        from core.threads import limit_threads

        from .analyst import Analyst

        limit_threads(threads or os.cpu_count() or 1)
        self.analyst = Analyst(models_dir)
        self.stages: list[tuple[str, float]] = []

    def pid(self) -> int:
        return os.getpid()

    def state(self, since: int = 0) -> list[tuple[str, float]]:
        """Each stage of the analysis under way from the `since`-th on, with its latest fraction:
        a stage shorter than a poll is still seen."""
        return self.stages[since:]

    def answer(self, header: dict, blobs: list[bytes]):
        self.stages = []

        def progress(stage: str, fraction: float) -> None:
            if self.stages and self.stages[-1][0] == stage:
                self.stages[-1] = (stage, fraction)
            else:
                self.stages.append((stage, fraction))

        try:
            return self.analyst.answer(header, blobs, progress)
        except Exception as error:  # noqa: BLE001 - every failure goes back as one line
            return error_reply(error), []


class RayWorkers(Workers):
    name = "ray"

    def __init__(self, address: str, models_dir: str | None = None, *, slots: int = 1,
                 nice: int = 0, threads: int = 1, timeout: float = 15.0):
        self._ray = import_ray()
        self.address, self.timeout = address, timeout
        self._owns_ray = not self._ray.is_initialized()
        if self._owns_ray:
            start_or_join(address)
        self._actor_class = self._ray.remote(num_cpus=threads, max_restarts=0,
                                             max_concurrency=2)(AnalystActor)
        self._arguments = (models_dir, nice, threads)
        self._free: queue.Queue = queue.Queue()
        self.actors: list = []
        for _ in range(slots):
            self._free.put(None)        # an actor is started the first time its slot is used
        self._pids: dict = {}

    def _start_actor(self):
        actor = self._actor_class.remote(*self._arguments)
        self.actors.append(actor)
        return actor

    def _replace(self, actor):
        self.actors.remove(actor)
        self._pids.pop(actor, None)
        kill_actors(self._ray, [actor])
        return self._start_actor()

    def _exchange(self, header: dict, blobs: Blobs, what: str, again: str,
                  progress: Progress | None = None) -> tuple[dict, Blobs]:
        ray = self._ray
        actor = self._free.get() or self._start_actor()
        try:
            first = actor not in self._pids
            result = actor.answer.remote(header, blobs)
            shown: list[tuple[str, float]] = []
            while True:
                done, _ = ray.wait([result], timeout=POLL_SECONDS)
                allowed = STARTUP_SECONDS if first else self.timeout
                since = max(len(shown) - 1, 0)      # the last stage shown may have moved on
                try:
                    stages = ray.get(actor.state.remote(since), timeout=allowed)
                    if first:
                        self._pids[actor] = ray.get(actor.pid.remote(), timeout=allowed)
                        first = False
                except ray.exceptions.GetTimeoutError:
                    actor = self._replace(actor)
                    raise WorkerTimeoutError(
                        f"the Ray analysis worker stopped answering for {allowed:.0f} s while "
                        f"{what}; a fresh worker has been started: {again}") from None
                for index, stage in enumerate(stages, start=since):
                    if index < len(shown) and shown[index] == stage:
                        continue
                    del shown[index:]
                    shown.append(stage)
                    if progress is not None:
                        progress(*stage)
                if done:                # asked after the answer, so the last stages are relayed too
                    return ray.get(result)
        except ray.exceptions.RayError as error:
            actor = self._replace(actor)
            raise WorkerLostError(
                f"the Ray analysis worker died while {what} ({first_line(error)[:300]}); a fresh "
                f"worker has been started: {again}") from None
        except WorkerError:
            raise
        except BaseException:
            # Left mid-request (the page's script stopped): the actor's work is nobody's now.
            actor = self._replace(actor)
            raise
        finally:
            self._free.put(actor)

    def pids(self) -> list[int]:
        return list(self._pids.values())

    def describe(self) -> str:
        return f"Ray workers on the cluster at {self.address}"

    def close(self) -> None:
        kill_actors(self._ray, self.actors)
        self.actors = []
        if self._owns_ray:
            self._ray.shutdown()
