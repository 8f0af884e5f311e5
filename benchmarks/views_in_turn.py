"""Could each face be seen fewer ways than every one? Reads stored analyses that scored every face
in every view (the robustness benchmark's reports of a run with `--views-per-face all`) and
re-decides the default verdict of each as if its faces had been seen only some ways: `all` (as
stored), `view` (as found and in one view, the views in turn along a person's faces: two passes
a face a model), `one` (AnalysisSettings.views_per_face "one": one way a face, as found,
mirrored, re-encoded in turn: one pass). Per set (the untouched clips, each transform) and for
each band: real clips called FAKE, fakes called REAL, clips decided and decided right.

    .venv/bin/python benchmarks/views_in_turn.py \
        ~/.cache/deepfake-detector/robustness/reports/<settings hash> ../shared/data/manifest.csv \
        --split val [--models-dir models] [--bands 0.10,0.11,0.12,0.13]

No model runs: the reports hold every face's calibrated P in each view; each member's raw P in a
view is its card's calibration undone, averaged over the ways a face is seen and calibrated
again, as core.pipeline does, and the verdict is core.pipeline.video_verdicts'."""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.models.zoo import DEFAULT_MODELS_DIR, available_models, fitted_ensemble  # noqa: E402
from core.pipeline import video_verdicts  # noqa: E402
from core.results import ENSEMBLE, AnalysisResult  # noqa: E402
from core.robustness.band import count_calls  # noqa: E402
from core.robustness.bench import labelled_reports  # noqa: E402
from core.verdicts.calibration import logit  # noqa: E402
from core.verdicts.verdict import calibrate  # noqa: E402
from core.verdicts.views import ORIGINAL  # noqa: E402

WAYS = ("all", "view", "one")


def seen_ways(way: str, position: int, views: tuple[str, ...]) -> tuple[str, ...]:
    """The ways a person's face at this position along its track is seen."""
    if way == "all":
        return (ORIGINAL, *views)
    if way == "view":
        return ORIGINAL, views[position % len(views)]
    return ((ORIGINAL, *views)[position % (1 + len(views))],)


def uncalibrated(p: float, threshold: float, temperature: float) -> float:
    """The network's raw P(fake) behind a calibrated score (verdict.calibrate undone)."""
    z = float(logit(p)) * temperature + float(logit(threshold))
    return float(1.0 / (1.0 + np.exp(-z)))


def seen_so(result: AnalysisResult, way: str, cards, ensemble) -> AnalysisResult:
    """The analysis as if its faces had been seen only the ways `way` gives them."""
    views = tuple(v for v in result.scored_views[ENSEMBLE])
    members = list(ensemble.weights)
    faces, position = [], {}
    for face in sorted(result.faces, key=lambda f: (f.person_id, f.frame_index)):
        k = position.get(face.person_id, 0)
        position[face.person_id] = k + 1
        ways = seen_ways(way, k, views)
        scores, seen = dict(face.scores), {}
        for name in members:
            card = cards[name]
            raw = [uncalibrated(face.views[name][v], card.threshold, card.temperature) for v in ways]
            scores[name] = float(calibrate(np.mean(raw), card.threshold, card.temperature))
            seen[name] = {v: face.views[name][v] for v in ways}
        scores[ENSEMBLE] = ensemble.face_score({n: scores[n] for n in members})
        seen[ENSEMBLE] = {v: ensemble.face_score({n: seen[n][v] for n in members}) for v in ways}
        faces.append(dataclasses.replace(face, scores=scores, views={**face.views, **seen}))
    settings = dataclasses.replace(result.settings,
                                   views_per_face="one" if way == "one" else "all")
    return dataclasses.replace(result, faces=faces, settings=settings)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", type=Path, help="a folder of analysis reports (JSON)")
    parser.add_argument("labels", type=Path, help="the labels CSV the benchmark ran on")
    parser.add_argument("--split", default=None)
    parser.add_argument("--models-dir", type=Path, default=Path(DEFAULT_MODELS_DIR),
                        help="the cards of the analyses' default verdict")
    parser.add_argument("--bands", default="0.10,0.11,0.12,0.13,0.14")
    parser.add_argument("--per-set", action="store_true", help="also each set's counts")
    args = parser.parse_args(argv)

    cards = available_models(args.models_dir)
    ensemble = fitted_ensemble(args.models_dir, cards)
    if ensemble is None:
        print(f"no current fitted ensemble in {args.models_dir}")
        return 1
    bands = [float(b) for b in args.bands.split(",")]
    # (way, band) -> set -> [(label, verdict)]
    calls: dict[tuple[str, float], dict[str, list]] = {}
    analyses = 0
    for transform, clip, truth, result in labelled_reports(args.reports, args.labels, args.split):
        if any(set(f.views.get(ENSEMBLE, {})) != {ORIGINAL, *result.scored_views[ENSEMBLE]}
               for f in result.faces) or not result.scored_views.get(ENSEMBLE):
            print(f"{transform}__{clip}: not every face was seen every way; run the benchmark with "
                  "--views-per-face all")
            return 1
        analyses += 1
        for way in WAYS:
            seen = seen_so(result, way, cards, ensemble)
            for band in bands:
                settings = dataclasses.replace(seen.settings, band=band)
                label = video_verdicts(seen.faces, seen.models, settings)[ENSEMBLE].label
                calls.setdefault((way, band), {}).setdefault(transform, []).append(
                    (truth, label))
    print(f"{analyses} analyses; per way and band, over all sets: real called FAKE, fakes called "
          "REAL, decided, right (the sets with a real clip called FAKE)")
    for way in WAYS:
        for band in bands:
            per_set = {t: count_calls(rows) for t, rows in calls[(way, band)].items()}
            total = {k: sum(c[k] for c in per_set.values())
                     for k in ("real_called_fake", "real", "fake_called_real", "fake", "decided",
                               "clips", "right")}
            accused = ", ".join(f"{t} {c['real_called_fake']}/{c['real']}"
                                for t, c in sorted(per_set.items()) if c["real_called_fake"])
            untouched = per_set.get("none")
            print(f"  {way:<4} band {band:.2f}: {total['real_called_fake']}/{total['real']}, "
                  f"{total['fake_called_real']}/{total['fake']}, {total['decided']}/"
                  f"{total['clips']}, {total['right']}"
                  + (f"; untouched {untouched['real_called_fake']}/{untouched['real']}, "
                     f"{untouched['fake_called_real']}/{untouched['fake']}, "
                     f"{untouched['decided']} decided" if untouched else "")
                  + (f" ({accused})" if accused else ""))
            if args.per_set:
                for t, c in sorted(per_set.items(), key=lambda item: (item[0] != "none", item[0])):
                    print(f"      {t:<11} real called FAKE {c['real_called_fake']}/{c['real']}, "
                          f"fakes called REAL {c['fake_called_real']}/{c['fake']}, decided "
                          f"{c['decided']}/{c['clips']}, right {c['right']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
