"""Training step cost per face under each Keras backend, on the same models, in one run.

    .venv/bin/python benchmarks/bench_train_step.py [--steps 5] [--batch 32] [--backends tensorflow,jax,torch]

For each backend a fresh process builds the classifier exactly as `python -m core train` does
(EfficientNet-Lite0 at 224, whose depthwise convolutions were ~40x slower per step than an
InceptionV3 cut under JAX on a GPU, and that InceptionV3 cut at 128 px as the reference),
compiles Adam + binary cross-entropy, warms up two steps and times `train_on_batch` on random
faces. Prints ms per face and each backend's ratio to TensorFlow in the same run.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = {"efficientnet_lite0 full 224": ("efficientnet_lite0", "full", 224),
          "inceptionv3 mixed2 128": ("inceptionv3", "mixed2", 128)}

CHILD = textwrap.dedent("""
    import json, sys, time
    import numpy as np, keras
    from core.models.backbones import build_classifier
    backbone, depth, size, batch, steps = sys.argv[1:6]
    size, batch, steps = int(size), int(batch), int(steps)
    model = build_classifier(backbone, depth=depth, input_size=size)
    model.compile(optimizer=keras.optimizers.Adam(3e-4), loss="binary_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch, size, size, 3)).astype("float32")
    y = rng.integers(0, 2, (batch, 1)).astype("float32")
    for _ in range(2):
        model.train_on_batch(x, y)
    started = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    seconds = (time.perf_counter() - started) / steps
    print(json.dumps({"backend": keras.backend.backend(), "ms_per_face": 1000 * seconds / batch}))
""")


def measure(backend: str, spec: tuple, batch: int, steps: int) -> float | None:
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3",
           "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-c", CHILD, *map(str, spec), str(batch), str(steps)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        print(f"  {backend}: failed: {done.stderr.strip().splitlines()[-1:]}")
        return None
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["backend"] == backend
    return result["ms_per_face"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--backends", default="tensorflow,jax,torch")
    args = parser.parse_args()
    backends = args.backends.split(",")
    print(f"train_on_batch, batch {args.batch}, mean of {args.steps} steps after 2 warm-up steps "
          f"(ms per face; x = ratio to {backends[0]} in this run)")
    for label, spec in MODELS.items():
        times = {b: measure(b, spec, args.batch, args.steps) for b in backends}
        base = times[backends[0]]
        cells = [f"{b} {t:7.1f}" + (f" ({t / base:4.1f}x)" if base and t else "")
                 if t is not None else f"{b} failed" for b, t in times.items()]
        print(f"  {label:<28} " + "   ".join(cells))


if __name__ == "__main__":
    main()
