"""How many threads TensorFlow and OpenCV may use in this process."""
from __future__ import annotations

from pathlib import Path


def limit_threads(intra: int, inter: int | None = None, opencv: int | None = None) -> bool:
    """Cap TensorFlow's thread pools (and OpenCV's, when given). Several workers on one machine
    each taking every core only thrash. TensorFlow accepts this only before its first op:
    returns False when it is too late and the process keeps what it has."""
    import tensorflow as tf

    if opencv is not None:
        import cv2

        cv2.setNumThreads(opencv)
    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(intra if inter is None else inter)
    except RuntimeError:
        return False
    return True


def lower_priority(nice: int) -> int:
    """Give this thread and TensorFlow's compute threads the scheduling priority `nice` (Linux
    keeps one per thread; a process may lower its own threads' priority, never raise it back).
    In a server, analyses then take whatever CPU page requests leave and a newcomer's page does
    not wait behind them. Threads this one starts later inherit it. Returns how many threads
    were changed; 0 where the system has no per-thread priorities."""
    import os
    import threading

    tasks = Path("/proc/self/task")
    if nice <= 0 or not tasks.is_dir() or not hasattr(os, "setpriority"):
        return 0
    ids = {threading.get_native_id()}
    for task in tasks.iterdir():
        try:
            if (task / "comm").read_text().startswith("tf_"):
                ids.add(int(task.name))
        except (OSError, ValueError):
            continue         # a thread that ended meanwhile
    changed = 0
    for tid in ids:
        try:
            if os.getpriority(os.PRIO_PROCESS, tid) < nice:
                os.setpriority(os.PRIO_PROCESS, tid, nice)
                changed += 1
        except OSError:
            continue
    return changed
