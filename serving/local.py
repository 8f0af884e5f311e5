"""Worker processes on this machine: each a `python -m serving.worker` started on first use and
kept, at a lower CPU priority than the server, one analysis at a time. A worker that dies (killed,
out of memory) or stops answering fails the analysis it had with one line, and the next analysis
gets a fresh worker."""
from __future__ import annotations

import os
import queue
import socket
import subprocess
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path

from .protocol import (Blobs, WorkerError, WorkerLostError, WorkerTimeoutError, receive,
                       send)
from .workers import STARTUP_SECONDS, Progress, Workers

PROJECT_ROOT = Path(__file__).resolve().parents[1]
POLL_SECONDS = 0.25


def _lost_text(what: str, again: str, returncode: int | None) -> str:
    how = {-9: "was killed (SIGKILL: out of memory, or stopped by hand)",
           -15: "was stopped (SIGTERM)"}.get(returncode, f"stopped (exit status {returncode})")
    return f"the analysis worker {how} while {what}; a fresh worker has been started: {again}"


class WorkerProcess:
    def __init__(self, models_dir: str | None, *, nice: int, threads: int, timeout: float):
        self.models_dir, self.nice, self.threads, self.timeout = models_dir, nice, threads, timeout
        self.process: subprocess.Popen | None = None
        self.connection: Connection | None = None
        self.started = 0
        self.answered = False       # this process has said something since it started

    def start(self) -> None:
        ours, theirs = socket.socketpair()
        command = [sys.executable, "-m", "serving.worker", "--fd", str(theirs.fileno()),
                   "--nice", str(self.nice), "--threads", str(self.threads)]
        if self.models_dir:
            command += ["--models-dir", self.models_dir]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p)}
        # A session of its own: its scheduling group can be niced (serving.worker), and a Ctrl-C
        # meant for the server does not kill it mid-analysis (it leaves when the server does).
        self.process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env,
                                        pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                                        start_new_session=True)
        theirs.close()
        self.connection = Connection(ours.detach())
        self.started += 1
        self.answered = False

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait()
            self.process = None

    def _restart(self) -> int | None:
        returncode = self.process.poll() if self.process is not None else None
        self.stop()
        self.start()
        return returncode

    def exchange(self, header: dict, blobs: Blobs, what: str, again: str,
                 progress: Progress | None = None) -> tuple[dict, Blobs]:
        """Send one request, pass its progress on, and return the worker's reply. `what` names
        the work and `again` what to do in the one-line message of a worker that died or hung
        meanwhile."""
        if not self.alive():
            self._restart()
        try:
            send(self.connection, header, blobs)
        except OSError:
            raise WorkerLostError(_lost_text(what, again, self._restart())) from None
        try:
            return self._await_reply(what, again, progress)
        except WorkerError:
            raise
        except BaseException:
            # Left mid-request (the page's script stopped: a closed tab): the worker's reply
            # would come to the next request. Its work is nobody's now, so it is replaced.
            self._restart()
            raise

    def _await_reply(self, what: str, again: str, progress: Progress | None):
        last_heard = time.monotonic()
        while True:
            try:
                ready = self.connection.poll(POLL_SECONDS)
                message = receive(self.connection) if ready else None
            except (EOFError, OSError):
                self.process.wait()        # the socket closed because the process ended
                raise WorkerLostError(_lost_text(what, again, self._restart())) from None
            now = time.monotonic()
            if message is None:
                if not self.alive():
                    raise WorkerLostError(_lost_text(what, again, self._restart()))
                allowed = self.timeout if self.answered else STARTUP_SECONDS
                if now - last_heard > allowed:
                    self.process.kill()
                    self._restart()
                    raise WorkerTimeoutError(
                        f"the analysis worker stopped answering for {allowed:.0f} s while "
                        f"{what}; a fresh worker has been started: {again}")
                continue
            last_heard, self.answered = now, True
            reply, reply_blobs = message
            if reply["kind"] == "progress":
                if progress is not None:
                    progress(reply["stage"], reply["fraction"])
            elif reply["kind"] != "alive":
                return reply, reply_blobs


class LocalWorkers(Workers):
    """`slots` worker processes, each started the first time a slot is used."""

    name = "local"

    def __init__(self, models_dir: str | None = None, *, slots: int = 1, nice: int = 10,
                 threads: int = 0, timeout: float = 15.0):
        self.workers = [WorkerProcess(models_dir, nice=nice, threads=threads, timeout=timeout)
                        for _ in range(slots)]
        self._free: queue.Queue[WorkerProcess] = queue.Queue()
        for worker in self.workers:
            self._free.put(worker)

    def _exchange(self, header: dict, blobs: Blobs, what: str, again: str, progress=None):
        worker = self._free.get()
        try:
            return worker.exchange(header, blobs, what, again, progress)
        finally:
            self._free.put(worker)

    def pids(self) -> list[int]:
        return [w.pid for w in self.workers if w.alive()]

    def describe(self) -> str:
        return f"{len(self.workers)} local worker process(es)"

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
