"""A loaded model's forward pass run by LiteRT (TensorFlow Lite's runtime, XNNPACK on the CPU).

The `.keras` file stays the model: it is loaded with safe_mode after its sha256 is checked, and
its traced forward pass is converted in memory to a LiteRT program, so nothing new is read from
disk. On this project's CPUs LiteRT scores a face 1.0-1.9x faster than TensorFlow at batch 32
and 2.2-4.7x faster at batch 1 (the Live page's size), with P(fake) equal within 1e-6
(`benchmarks/bench_runtime.py` measures it).
"""
from __future__ import annotations

import logging
import os
import threading

import numpy as np

log = logging.getLogger(__name__)

# Batches are padded up to one of these sizes, so each size keeps one prepared interpreter:
# resizing an XNNPACK interpreter re-plans it (0.1 s at 32), far more than scoring a face.
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32)


class LiteRTUnavailable(RuntimeError):
    """LiteRT is not installed or cannot convert this model; the caller keeps TensorFlow."""


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as exc:
        raise LiteRTUnavailable(f"ai-edge-litert is not installed ({exc})") from None
    return Interpreter


def cpu_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:   # not on Linux
        return max(1, os.cpu_count() or 1)


def convert(traced_fn) -> bytes:
    """A LiteRT flatbuffer of a tf.function with one [None, S, S, 3] float32 input signature."""
    import tensorflow as tf

    try:
        converter = tf.lite.TFLiteConverter.from_concrete_functions(
            [traced_fn.get_concrete_function()], traced_fn)
        return converter.convert()
    except Exception as exc:   # the converter raises many types for ops it lacks
        raise LiteRTUnavailable(f"cannot convert to LiteRT: {str(exc).splitlines()[0]}") from None


class LiteRTProgram:
    """Scores N x S x S x 3 float32 batches of at most BATCH_BUCKETS[-1]; not thread-safe (the
    Classifier holding it serialises calls)."""

    def __init__(self, flatbuffer: bytes, input_size: int, threads: int | None = None):
        self._interpreter_class = _interpreter_class()
        self._flatbuffer = flatbuffer
        self._size = int(input_size)
        self._threads = threads or cpu_threads()
        self._by_bucket: dict[int, tuple] = {}
        self._lock = threading.Lock()

    @property
    def max_batch(self) -> int:
        return BATCH_BUCKETS[-1]

    def _prepared(self, bucket: int):
        prepared = self._by_bucket.get(bucket)
        if prepared is None:
            interpreter = self._interpreter_class(model_content=self._flatbuffer,
                                                  num_threads=self._threads)
            input_index = interpreter.get_input_details()[0]["index"]
            interpreter.resize_tensor_input(input_index, [bucket, self._size, self._size, 3])
            interpreter.allocate_tensors()
            output_index = interpreter.get_output_details()[0]["index"]
            prepared = (interpreter, input_index, output_index)
            self._by_bucket[bucket] = prepared
        return prepared

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        n = batch.shape[0]
        if not 0 < n <= self.max_batch:
            raise ValueError(f"LiteRT batch of {n}: expected 1-{self.max_batch} faces")
        bucket = next(b for b in BATCH_BUCKETS if b >= n)
        if bucket != n:
            padded = np.zeros((bucket,) + batch.shape[1:], np.float32)
            padded[:n] = batch
            batch = padded
        with self._lock:
            interpreter, input_index, output_index = self._prepared(bucket)
            interpreter.set_tensor(input_index, np.ascontiguousarray(batch, np.float32))
            interpreter.invoke()
            return np.array(interpreter.get_tensor(output_index)[:n], dtype=np.float64).reshape(-1)


def program_for(traced_fn, input_size: int) -> LiteRTProgram:
    return LiteRTProgram(convert(traced_fn), input_size)
