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


def interleaved_ms_per_face(predicts, sides, rounds: int, dtype=np.uint8) -> list[list[float]]:
    """ms per face of each predict over `rounds` batches of random faces at its side, every
    predict once a round so that all see the same load; the warm-up rounds are dropped."""
    rng = np.random.default_rng(0)
    per_face = [[] for _ in predicts]
    for _ in range(rounds + WARM_UP):
        for predict, side, times in zip(predicts, sides, per_face):
            faces = rng.integers(0, 256, (BATCH, side, side, 3), dtype=np.uint8).astype(dtype)
            started = time.perf_counter()
            predict(faces)
            times.append((time.perf_counter() - started) / BATCH * 1000)
    return [times[WARM_UP:] for times in per_face]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("baseline", type=Path, help="the card of the model it replaces")
    parser.add_argument("candidate", type=Path, help="the card of the new model")
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()

    models = [load_classifier(args.baseline), load_classifier(args.candidate)]
    per_face = interleaved_ms_per_face([m.predict for m in models],
                                       [m.input_size for m in models], args.rounds)
    for role, model, times in zip(("baseline", "candidate"), models, per_face):
        print(f"{role:<9} {model.name:<40} {model.input_size:>4} px  median "
              f"{np.median(times):6.2f} ms per face  min {min(times):6.2f}")


if __name__ == "__main__":
    main()
