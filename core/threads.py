"""How many threads TensorFlow and OpenCV may use in this process."""
from __future__ import annotations


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

