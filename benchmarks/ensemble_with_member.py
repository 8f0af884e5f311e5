"""Would the default verdict gain from one more member (issue #23, item 4)? A first screen from
an evaluate JSON that scored the default and the candidates on the same clips: each candidate's
video P(fake) mixed into the default's at a few weights, re-decided at the band, with AUC (and
its bootstrap interval), log loss, real clips called FAKE, fakes called REAL and the share decided
beside the default's own. No model runs. The mix is not recalibrated, and the views' veto (a
verdict the views disagree on is UNCERTAIN) is not applied, so a member that gains here must
still be fitted (`models fit-ensemble`) and measured on the re-encodes before it may join.

    .venv/bin/python benchmarks/ensemble_with_member.py val.json [--band 0.12] [--weights 0.2,0.33]

The default's own members (models/ensemble.json) are left out of the candidates.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from core.evaluation.metrics import verdict_metrics  # noqa: E402
from core.results import ENSEMBLE  # noqa: E402
from core.settings import AnalysisSettings  # noqa: E402


def row(name: str, labels, p, band: float) -> str:
    m = verdict_metrics(labels, p, band)
    low, high = m["auc_ci95"]
    return (f"{name:<52} {m['auc']:.3f} [{low:.2f}, {high:.2f}]  {m['log_loss']:.3f}  "
            f"{m['real_called_fake']:>2}/{m['real_videos']}  {m['fake_called_real']:>2}/"
            f"{m['fake_videos']}  {m['decided_share']:.0%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="a `python -m core evaluate --out` JSON")
    parser.add_argument("--band", type=float, default=AnalysisSettings().band)
    parser.add_argument("--weights", default="0.2,0.33", help="the candidate's share of the mix")
    parser.add_argument("--ensemble", type=Path, default=Path("models/ensemble.json"),
                        help="the default verdict's card, whose members are not candidates")
    args = parser.parse_args()

    videos = json.loads(args.results.read_text())["videos"]
    labels = [v["label"] for v in videos]
    default = np.array([v["scores"][ENSEMBLE] for v in videos])
    members = set(json.loads(args.ensemble.read_text())["weights"])
    candidates = sorted(set().union(*(v["scores"] for v in videos)) - {ENSEMBLE} - members)
    print(f"{'':<52} AUC [95%]       logloss  real→FAKE fake→REAL decided  (band {args.band:g})")
    print(row("default verdict", labels, default, args.band))
    for name in candidates:
        candidate = np.array([v["scores"][name] for v in videos])
        for weight in (float(w) for w in args.weights.split(",")):
            mixed = (1 - weight) * default + weight * candidate
            print(row(f"+ {weight:g} x {name}", labels, mixed, args.band))


if __name__ == "__main__":
    main()
