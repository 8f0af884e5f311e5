"""Would the default verdict gain from one more member (issue #23, item 4)? A first screen from
an evaluate JSON that scored the default and the candidates on the same clips: each candidate's
video P(fake) mixed into the default's at a few weights, re-decided at the band, in `evaluate`'s
own table (pooled, then per dataset: AUC with its bootstrap interval, log loss, real clips called
FAKE, fakes called REAL, the share decided and right) beside the default's own. No model runs.
The mix is not recalibrated, and the views' veto (a verdict the views disagree on is UNCERTAIN)
is not applied, so a member that gains here must still be fitted (`models fit-ensemble`) and
measured on the re-encodes before it may join.

    .venv/bin/python benchmarks/ensemble_with_member.py val.json [--band 0.12] [--weights 0.2,0.33]

The default's own members (models/ensemble.json) are left out of the candidates.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.evaluation.evaluate import format_report, summarise  # noqa: E402
from core.results import ENSEMBLE  # noqa: E402
from core.settings import AnalysisSettings  # noqa: E402

DEFAULT = "default verdict"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="a `python -m core evaluate --out` JSON")
    parser.add_argument("--band", type=float, default=AnalysisSettings().band)
    parser.add_argument("--weights", default="0.2,0.33", help="the candidate's share of the mix")
    parser.add_argument("--ensemble", type=Path, default=Path("models/ensemble.json"),
                        help="the default verdict's card, whose members are not candidates")
    args = parser.parse_args()

    results = json.loads(args.results.read_text())
    members = set(json.loads(args.ensemble.read_text())["weights"])
    candidates = sorted(set().union(*(v["scores"] for v in results["videos"]))
                        - {ENSEMBLE} - members)
    weights = [float(w) for w in args.weights.split(",")]
    # No "calls": every mix, the default's own row too, is re-decided from its P at the band.
    rows = []
    for video in results["videos"]:
        scores = video["scores"]
        mixed = {f"+ {w:g} x {name}": (1 - w) * scores[ENSEMBLE] + w * scores[name]
                 for name in candidates for w in weights}
        rows.append({"label": video["label"], "dataset": video.get("dataset"),
                     "scores": {DEFAULT: scores[ENSEMBLE], **mixed}})
    names = list(rows[0]["scores"])
    report = {**summarise(rows, names, args.band), "videos": rows, "band": args.band,
              "seconds": results["seconds"]}
    print(format_report(report))


if __name__ == "__main__":
    main()
