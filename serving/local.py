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
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path

from app_state import StoredAnalysis

from .protocol import (AnalysisRequest, WorkerLostError, WorkerTimeoutError, entry_from_reply,
                       receive, send)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
POLL_SECONDS = 0.25
# A fresh worker imports TensorFlow before it can answer at all: seconds on an idle machine,
# many more on a busy one. It is allowed this long before its first word.
STARTUP_SECONDS = 180.0
Progress = Callable[[str, float], None]


def _lost_text(upload_name: str, returncode: int | None) -> str:
    how = {-9: "was killed (SIGKILL: out of memory, or stopped by hand)",
           -15: "was stopped (SIGTERM)"}.get(returncode, f"stopped (exit status {returncode})")
    return (f"the analysis worker {how} while analysing {upload_name}; a fresh worker has "
            "been started: upload the file again")


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

    def analyze(self, request: AnalysisRequest, progress: Progress | None = None
                ) -> StoredAnalysis:
        if not self.alive():
            self._restart()
        try:
            send(self.connection, request.header(), [request.data])
        except OSError:
            raise WorkerLostError(_lost_text(request.upload_name, self._restart())) from None
        last_heard = time.monotonic()
        while True:
            try:
                ready = self.connection.poll(POLL_SECONDS)
                message = receive(self.connection) if ready else None
            except (EOFError, OSError):
                self.process.wait()        # the socket closed because the process ended
                raise WorkerLostError(_lost_text(request.upload_name, self._restart())) from None
            now = time.monotonic()
            if message is None:
                if not self.alive():
                    raise WorkerLostError(_lost_text(request.upload_name, self._restart()))
                allowed = self.timeout if self.answered else STARTUP_SECONDS
                if now - last_heard > allowed:
                    self.process.kill()
                    self._restart()
                    raise WorkerTimeoutError(
                        f"the analysis worker stopped answering for {allowed:.0f} s while "
                        f"analysing {request.upload_name}; a fresh worker has been started: "
                        "upload the file again")
                continue
            last_heard, self.answered = now, True
            header, blobs = message
            if header["kind"] == "progress":
                if progress is not None:
                    progress(header["stage"], header["fraction"])
            elif header["kind"] != "alive":
                return entry_from_reply(header, blobs)


class LocalWorkers:
    """`slots` worker processes, each started the first time a slot is used."""

    name = "local"

    def __init__(self, models_dir: str | None = None, *, slots: int = 1, nice: int = 10,
                 threads: int = 0, timeout: float = 15.0):
        self.workers = [WorkerProcess(models_dir, nice=nice, threads=threads, timeout=timeout)
                        for _ in range(slots)]
        self._free: queue.Queue[WorkerProcess] = queue.Queue()
        for worker in self.workers:
            self._free.put(worker)

    def analyze(self, request: AnalysisRequest, progress: Progress | None = None
                ) -> StoredAnalysis:
        worker = self._free.get()
        try:
            return worker.analyze(request, progress)
        finally:
            self._free.put(worker)

    def pids(self) -> list[int]:
        return [w.pid for w in self.workers if w.alive()]

    def describe(self) -> str:
        return f"{len(self.workers)} local worker process(es)"

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
