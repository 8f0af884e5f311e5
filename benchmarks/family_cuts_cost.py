"""Cost per face of each origin family at other cuts and input sizes, beside its shipped card's,
measured in one run with the models interleaved (issue #23, item 1: depth and input size chosen
per family from measured cost per face and val AUC; its budget: no more per face than the card).

    .venv/bin/python benchmarks/family_cuts_cost.py [--models-dir models] [--rounds 8]
        [--families inceptionv3,resnet50]

Each family's row "card" is built from its card (cut, input size, framing); the others are the
same family cut elsewhere or fed another size, at the card's framing. Cost does not depend on the
weights or the pixels, so every model is an untrained stand-in scoring random faces; each round
scores one batch of 32 with every model of the family, the first two rounds are warm-up. Prints
the median ms per face, the parameters and their float32 size, the ratio to the card, and
whether it is within budget (no slower than the card, allowing 5% for a shared CPU; weights
under 25 MB).
Which of them is worth training is the val AUC's to say, not this script's.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from benchmarks.compare_model_cost import interleaved_ms_per_face  # noqa: E402

FILE_BUDGET_MB = 25.0  # issue #23: each model file
BYTES_PER_PARAM = 4  # float32 weights; the .keras file is a little larger
# Shallower and larger, deeper and smaller: the trade the budget allows around each card.
CANDIDATES = {
    "efficientnetb7": [("block2a_activation", 160), ("block2g_add", 112), ("block3g_add", 96)],
    "inceptionresnetv2": [("block35_5_ac", 128), ("block35_5_ac", 160), ("mixed_6a", 96)],
    "inceptionv3": [("mixed1", 144), ("mixed2", 160), ("mixed3", 112), ("mixed5", 96)],
    "resnet50": [("conv2_block3_out", 160), ("conv3_block4_out", 112), ("conv4_block6_out", 96)],
    "vgg16": [("block2_pool", 128), ("block3_pool", 80), ("block4_pool", 80)],
}


def shipped_cards(models_dir: Path) -> dict:
    """family -> its card, read and checked by the zoo as the app reads them."""
    from core.models.zoo import available_models

    return {card.backbone: card for card in available_models(models_dir).values()
            if card.backbone in CANDIDATES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--families", default=",".join(CANDIDATES))
    args = parser.parse_args()

    from core.models.backbones import build_classifier

    cards = shipped_cards(args.models_dir)
    print("| family | cut | backbone input | params | weights, MB | ms per face (median) | x card "
          "| within budget |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for family in [f.strip() for f in args.families.split(",") if f.strip()]:
        card = cards.get(family)
        if card is None:
            print(f"| {family} | no card in {args.models_dir} | | | | | | |")
            continue
        framing = float((card.training.get("framing") or {}).get("share_kept", 1.0))
        backbone_size = int(card.training["input_size"])
        shapes = [(True, card.depth, backbone_size)]
        shapes += [(False, depth, size) for depth, size in CANDIDATES[family]
                   if (depth, size) != (card.depth, backbone_size)]
        models = [build_classifier(family, depth=depth, input_size=size, framing=framing)
                  for _, depth, size in shapes]
        times = interleaved_ms_per_face([m.predict_on_batch for m in models],
                                        [m.input_shape[1] for m in models], args.rounds,
                                        dtype=np.float32)
        medians = [float(np.median(t)) for t in times]
        for (is_card, depth, size), model, median in zip(shapes, models, medians):
            ratio = median / medians[0]
            cut = f"{depth} (card)" if is_card else depth
            params = model.count_params()
            megabytes = params * BYTES_PER_PARAM / 1e6
            within = ratio <= 1.05 and megabytes <= FILE_BUDGET_MB
            print(f"| {family} | {cut} | {size} | {params / 1e6:.2f} M | "
                  f"{megabytes:.1f} | {median:.2f} | {ratio:.2f} | {'yes' if within else 'no'} |",
                  flush=True)


if __name__ == "__main__":
    main()
