"""What the models beside the verdict lose when they score the crops as found and not the views
(AnalysisSettings.views_on = "verdict"). Reads the robustness benchmark's stored analyses of a run
where every model scored every view (`python -m core robustness ... --models all --views-on all`)
and re-decides each model's verdict on every clip twice, from the same faces: with its views, and
with the crops alone. Per model and set (the untouched clips, each transform): AUC, real clips
called FAKE, fakes called REAL, share decided; and how many verdicts differ.

    .venv/bin/python benchmarks/views_beside_verdict.py \
        ~/.cache/deepfake-detector/robustness/reports/<selection> ../shared/data/manifest.csv \
        --split val

No model runs: the reports hold every face's calibrated P in each view."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.evaluation.evaluate import summarise  # noqa: E402
from core.pipeline import video_verdicts  # noqa: E402
from core.results import ENSEMBLE  # noqa: E402
from core.robustness.band import without_views  # noqa: E402
from core.robustness.bench import labelled_reports  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", type=Path, help="a folder of analysis reports (JSON)")
    parser.add_argument("labels", type=Path, help="the labels CSV the benchmark ran on")
    parser.add_argument("--split", default=None)
    args = parser.parse_args(argv)

    rows: dict[str, dict[str, list[dict]]] = {"views": {}, "crops": {}}
    differ: dict[str, int] = {}
    band = None
    for transform, clip, label, result in labelled_reports(args.reports, args.labels, args.split):
        band = result.settings.band
        # The models outside the verdict: with views_on "verdict" they score no view.
        beside = [m for m in result.models if m not in result.ensemble.get("weights", {})]
        both = {"views": video_verdicts(result.faces, result.models, result.settings),
                "crops": video_verdicts(without_views(result, beside).faces, result.models,
                                        result.settings)}
        for way, verdicts in both.items():
            rows[way].setdefault(transform, []).append({
                "label": label,
                "scores": {m: verdicts[m].probability for m in [*result.models, ENSEMBLE]},
                "calls": {m: verdicts[m].label for m in [*result.models, ENSEMBLE]}})
        for m in result.models:
            differ[m] = differ.get(m, 0) + (both["views"][m].label != both["crops"][m].label)
    if band is None:
        print(f"no report of these clips with faces in {args.reports}")
        return 1
    models = sorted(differ)
    print(f"band {band}; each cell: AUC, real called FAKE, fake called REAL, decided "
          "(with its views | the crops alone)")
    for model in models:
        total = sum(len(r) for r in rows["views"].values())
        print(f"\n{model}: verdict differs on {differ[model]} of {total} analyses")
        sums = {"views": [0, 0, 0, 0], "crops": [0, 0, 0, 0]}
        for transform in sorted(rows["views"], key=lambda t: (t != "none", t)):
            cells = []
            for way in ("views", "crops"):
                m = summarise(rows[way][transform], [model], band)["models"][model]
                decided = round(m["decided_share"] * m["videos"])
                for k, v in enumerate((m["real_called_fake"], m["real_videos"],
                                       m["fake_called_real"], m["fake_videos"])):
                    sums[way][k] += v
                auc = "n/a" if m["auc"] is None else f"{m['auc']:.3f}"
                cells.append(f"{auc} {m['real_called_fake']}/{m['real_videos']} "
                             f"{m['fake_called_real']}/{m['fake_videos']} {decided}/{m['videos']}")
            print(f"  {transform:<11} {cells[0]:<26} | {cells[1]}")
        print("  all sets    " + " | ".join(
            f"real->FAKE {s[0]}/{s[1]}, fake->REAL {s[2]}/{s[3]}" for s in sums.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
