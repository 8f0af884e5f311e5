"""Forward passes run by LiteRT (TensorFlow Lite's runtime, XNNPACK on the CPU).

The networks stay what they are (a `.keras` file loaded with safe_mode after its sha256 is
checked; MTCNN's packaged weights): their traced TensorFlow function is converted to a LiteRT
program, a flatbuffer of operators and weights that holds no code, and the program is checked
against TensorFlow on one input before it is used. A model's program is cached (under
cache_home()/litert, named by the model file's sha256 and the converter's version) because
converting takes 0.3-2 s a model; a cached program that fails the check is converted again. `benchmarks/bench_runtime.py` measures both runtimes on the
shipped models and MTCNN, side by side.
"""
from __future__ import annotations

import re
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from core import atomic
from core.threads import compute_threads

# Batches are padded up to one of these sizes, so each size keeps one prepared interpreter:
# resizing an XNNPACK interpreter re-plans it (0.1 s for Lite0 at 32), far more than a face costs.
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32)
# The largest difference from TensorFlow a converted program may show on its check input.
AGREEMENT_TOLERANCE = 1e-4


class LiteRTUnavailable(RuntimeError):
    """LiteRT is not installed or cannot run this network; the caller keeps TensorFlow."""


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as exc:
        raise LiteRTUnavailable(f"ai-edge-litert is not installed ({exc})") from None
    return Interpreter


def convert(traced_fn) -> bytes:
    """A LiteRT flatbuffer of a tf.function that has one input signature."""
    import tensorflow as tf

    try:
        converter = tf.lite.TFLiteConverter.from_concrete_functions(
            [traced_fn.get_concrete_function()], traced_fn)
        return converter.convert()
    except Exception as exc:   # the converter raises many types for ops it lacks
        raise LiteRTUnavailable(f"cannot convert to LiteRT: {str(exc).splitlines()[0]}") from None


def _output_rank(detail: dict) -> int:
    # The converter names a function's outputs Identity, Identity_1, ... in the function's order.
    match = re.fullmatch(r"(?:.*/)?Identity(?:_(\d+))?(?::\d+)?", detail["name"])
    return int(match.group(1) or 0) if match else detail["index"]


class InterpreterPool:
    """One prepared interpreter per input shape, at most `max_shapes` kept (least recently used
    dropped). `run(x)` returns the network's outputs, in its function's order, as float arrays.
    Calls are serialised: an interpreter is not safe to share between threads."""

    def __init__(self, flatbuffer: bytes, threads: int | None = None, max_shapes: int = 8):
        self._interpreter_class = _interpreter_class()
        self.flatbuffer = flatbuffer
        self._threads = threads or compute_threads()
        self._max_shapes = max_shapes
        self._by_shape: OrderedDict[tuple, tuple] = OrderedDict()
        self._lock = threading.Lock()

    def _prepared(self, shape: tuple):
        prepared = self._by_shape.get(shape)
        if prepared is not None:
            self._by_shape.move_to_end(shape)
            return prepared
        interpreter = self._interpreter_class(model_content=self.flatbuffer,
                                              num_threads=self._threads)
        input_index = interpreter.get_input_details()[0]["index"]
        interpreter.resize_tensor_input(input_index, list(shape))
        interpreter.allocate_tensors()
        outputs = [d["index"] for d in sorted(interpreter.get_output_details(), key=_output_rank)]
        prepared = (interpreter, input_index, outputs)
        self._by_shape[shape] = prepared
        if len(self._by_shape) > self._max_shapes:
            self._by_shape.popitem(last=False)
        return prepared

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        x = np.ascontiguousarray(x, np.float32)
        with self._lock:
            interpreter, input_index, outputs = self._prepared(tuple(x.shape))
            interpreter.set_tensor(input_index, x)
            interpreter.invoke()
            return [np.array(interpreter.get_tensor(i)) for i in outputs]


def bucketed(pool: InterpreterPool, batch: np.ndarray, buckets=BATCH_BUCKETS) -> list[np.ndarray]:
    """The pool's outputs for a batch of 1 to buckets[-1] items, run padded with zeros up to the
    next bucket (an item's outputs do not depend on its neighbours)."""
    n = batch.shape[0]
    if not 0 < n <= buckets[-1]:
        raise ValueError(f"LiteRT batch of {n}: expected 1-{buckets[-1]} items")
    bucket = next(b for b in buckets if b >= n)
    if bucket != n:
        padded = np.zeros((bucket,) + batch.shape[1:], np.float32)
        padded[:n] = batch
        batch = padded
    return [out[:n] for out in pool.run(batch)]


def cached_program_path(content_sha256: str) -> Path:
    import tensorflow as tf

    return atomic.cache_home() / "litert" / f"{content_sha256}-tf{tf.__version__}.tflite"


def checked_pool(traced_fn, check_input: np.ndarray, cache_key: str | None = None
                 ) -> InterpreterPool:
    """The traced function run on LiteRT, after its outputs on check_input were found equal to
    TensorFlow's (within AGREEMENT_TOLERANCE). With cache_key (the sha256 of the file the
    function was loaded from) the program is read from, or written to, the cache."""
    expected = traced_fn(check_input)
    expected = [np.asarray(t) for t in (expected if isinstance(expected, (list, tuple)) else [expected])]
    cached = cached_program_path(cache_key) if cache_key else None
    if cached is not None and cached.is_file():
        try:
            return _agreeing(InterpreterPool(cached.read_bytes()), check_input, expected)
        except (LiteRTUnavailable, OSError, ValueError):
            pass                                   # damaged or stale: converted again below
    pool = _agreeing(InterpreterPool(convert(traced_fn)), check_input, expected)
    if cached is not None:
        try:
            atomic.write_bytes(cached, pool.flatbuffer)
        except OSError:                            # a read-only home: convert each time
            pass
    return pool


def _agreeing(pool: InterpreterPool, check_input: np.ndarray, expected: list) -> InterpreterPool:
    try:
        got = pool.run(check_input)
    except Exception as exc:   # the runtime raises RuntimeError/ValueError for ops it cannot run
        raise LiteRTUnavailable(f"LiteRT cannot run it: {str(exc).splitlines()[0]}") from None
    if len(got) != len(expected) or any(
            g.shape != e.shape or not np.allclose(g, e, rtol=0, atol=AGREEMENT_TOLERANCE)
            for g, e in zip(got, expected)):
        raise LiteRTUnavailable("its LiteRT program does not give TensorFlow's outputs")
    return pool
