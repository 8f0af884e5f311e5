"""Scanning an archive: the local engine and the Ray engine on the same clips, in one run.

    .venv/bin/python benchmarks/bench_scan.py [--clips 12] [--seconds 10] [--workers N]
                                              [--models default] [--videos FOLDER]

Baseline first: the local engine (this process, one video after another, TensorFlow on every
core). Then the Ray engine on a local Ray sized to this machine (one worker per core, each with
one TensorFlow thread). The clips are generated (the astronaut's face moving over a texture,
640x360 at 25 fps, `--seconds` long) unless `--videos` names a folder. Prints, for each engine,
the time to start (loading the models; for Ray also starting Ray and its workers), clips per
minute once started and overall, then per-core throughput, the peak resident memory of the local
process and of each Ray worker, and what a million 10-second clips would take on N such cores.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from core.cli import find_videos  # noqa: E402
from core.scan.jobs import plan  # noqa: E402
from core.scan.scanner import ScannerConfig  # noqa: E402
from core.settings import AnalysisSettings  # noqa: E402


def peak_rss_mib(pid: int | str = "self") -> float:
    """VmHWM: the most resident memory the process has held (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def timed_engine(start, jobs):
    started = time.perf_counter()
    engine = start()
    ready = time.perf_counter()
    failed = []
    engine.run(jobs, lambda outcome: outcome.failed and failed.append(outcome.error))
    done = time.perf_counter()
    return engine, ready - started, done - ready, failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--videos", type=Path, default=None, help="scan these instead")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--models", default="default")
    parser.add_argument("--frames", type=int, default=AnalysisSettings().frames)
    args = parser.parse_args()

    from core.scan.local import LocalEngine
    from core.scan.ray_engine import RayEngine

    with tempfile.TemporaryDirectory(prefix="bench_scan") as temp:
        if args.videos:
            videos = find_videos([args.videos])
        else:
            from tests.fixtures import make_face_clip

            frames = int(round(args.seconds * 25))
            videos = [make_face_clip(Path(temp) / f"clip{n:03d}.mp4", frames=frames, fps=25,
                                     face_size=110 + 8 * (n % 10)) for n in range(args.clips)]
        jobs = plan(videos)
        config = ScannerConfig(models=args.models,
                               settings=AnalysisSettings(frames=args.frames))
        print(f"{len(jobs)} clips ({'generated, %g s each' % args.seconds if not args.videos else args.videos}), "
              f"models: {args.models}, {args.frames} frames per clip, {os.cpu_count()} cores")

        local, local_start, local_run, local_failed = timed_engine(lambda: LocalEngine(config), jobs)
        local_rss = peak_rss_mib()
        ray_engine, ray_start, ray_run, ray_failed = timed_engine(
            lambda: RayEngine(config, workers=args.workers), jobs)
        workers = ray_engine.workers
        worker_rss = [peak_rss_mib(pid) for pid in ray_engine.pids.values()]
        ray_engine.close()

    def per_minute(seconds: float) -> float:
        return 60.0 * len(jobs) / seconds

    print(f"{'engine':<28} {'start s':>8} {'scan s':>8} {'clips/min':>10} {'incl. start':>12}")
    print(f"{'local (baseline, 1 process)':<28} {local_start:>8.1f} {local_run:>8.1f} "
          f"{per_minute(local_run):>10.1f} {per_minute(local_start + local_run):>12.1f}")
    print(f"{f'ray ({workers} workers)':<28} {ray_start:>8.1f} {ray_run:>8.1f} "
          f"{per_minute(ray_run):>10.1f} {per_minute(ray_start + ray_run):>12.1f}")
    print(f"ray / local, once started: {local_run / ray_run:.2f}x")
    per_core = per_minute(ray_run) / workers
    print(f"per core (ray, one worker per core): {per_core:.1f} clips/min")
    print(f"peak RSS: local process {local_rss:.0f} MiB; each ray worker "
          + ", ".join(f"{m:.0f}" for m in worker_rss) + " MiB")
    for cores in (64, 256, 1024):
        hours = 1e6 / (per_core * cores) / 60
        print(f"a million such clips on {cores} such cores: {hours:.1f} h "
              f"({cores * max(worker_rss, default=0) / 1024:.0f} GiB of worker memory)")
    if local_failed or ray_failed:
        print(f"failed: local {local_failed}, ray {ray_failed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
