"""Predict time per face of a model against a baseline model, measured in the same run with the
two interleaved, so that both see the same load on a shared CPU (the budget of issue #23: a
retrained family may cost no more per face than the card it replaces).

    .venv/bin/python benchmarks/compare_model_cost.py OLD_CARD.json NEW_CARD.json [--rounds 40]

Each round scores one batch of 32 faces with each model; the first two rounds are warm-up. Speed
does not depend on the pixels, so the faces are random; each model gets them at its own input
size, as the pipeline resizes a crop to it.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from core.models.model_store import load_classifier  # noqa: E402

BATCH = 32
WARM_UP = 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("baseline", type=Path, help="the card of the model it replaces")
    parser.add_argument("candidate", type=Path, help="the card of the new model")
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()

    models = [load_classifier(args.baseline), load_classifier(args.candidate)]
    rng = np.random.default_rng(0)
    per_face = {m.name: [] for m in models}
    for _ in range(args.rounds + WARM_UP):
        for model in models:
            size = model.input_size
            faces = rng.integers(0, 256, (BATCH, size, size, 3), dtype=np.uint8)
            started = time.perf_counter()
            model.predict(faces)
            per_face[model.name].append((time.perf_counter() - started) / BATCH * 1000)
    for role, model in zip(("baseline", "candidate"), models):
        times = per_face[model.name][WARM_UP:]
        print(f"{role:<9} {model.name:<40} {model.input_size:>4} px  median "
              f"{np.median(times):6.2f} ms per face  min {min(times):6.2f}")


if __name__ == "__main__":
    main()
