"""Thread limits and priorities: analyses yield the CPU to page requests."""
from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from core.threads import lower_priority


def _nice(tid: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, tid)


def _tensorflow_threads() -> list[int]:
    tasks = Path("/proc/self/task")
    return [int(t.name) for t in tasks.iterdir()
            if (t / "comm").read_text().startswith("tf_")]


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="per-thread priorities: Linux")
def test_an_analysis_thread_and_tensorflow_yield_but_the_server_thread_does_not():
    import tensorflow as tf

    tf.linalg.matmul(tf.ones((8, 8)), tf.ones((8, 8)))      # TensorFlow's compute threads exist
    assert _tensorflow_threads()
    main = threading.get_native_id()
    main_before = _nice(main)
    seen = {}

    def analysis():
        seen["changed"] = lower_priority(main_before + 7)
        seen["own"] = _nice(threading.get_native_id())
        child = threading.Thread(target=lambda: seen.update(child=_nice(threading.get_native_id())))
        child.start()
        child.join()

    worker = threading.Thread(target=analysis)
    worker.start()
    worker.join()
    assert seen["own"] == main_before + 7
    assert seen["child"] == main_before + 7           # threads it starts (decoding) inherit it
    assert all(_nice(t) >= main_before + 7 for t in _tensorflow_threads())
    assert _nice(main) == main_before                  # the server's own thread keeps its place
    assert lower_priority(0) == 0                      # 0 turns it off
