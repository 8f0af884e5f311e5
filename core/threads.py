"""How many threads TensorFlow, LiteRT and OpenCV may use in this process."""
from __future__ import annotations


import os

_intra_limit: int | None = None


def compute_threads() -> int:
    """Threads a network's forward pass may use here: the limit set by limit_threads, else
    every core this process may run on (LiteRT programs read it when they are built)."""
    if _intra_limit is not None:
        return _intra_limit
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:   # not on Linux
        return max(1, os.cpu_count() or 1)


def limit_threads(intra: int, inter: int | None = None, opencv: int | None = None) -> bool:
    """Cap TensorFlow's thread pools (and OpenCV's, when given), and LiteRT's for the programs
    built after this call. Several workers on one machine each taking every core only thrash.
    TensorFlow accepts this only before its first op: returns False when it is too late and the
    process keeps what it has."""
    global _intra_limit
    import tensorflow as tf

    _intra_limit = max(1, int(intra))

    if opencv is not None:
        import cv2

        cv2.setNumThreads(opencv)
    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(intra if inter is None else inter)
    except RuntimeError:
        return False
    return True

