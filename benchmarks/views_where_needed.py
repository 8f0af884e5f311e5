"""Could the views (mirror, JPEG) be spent only where they can change the verdict? Reads stored
analyses that scored every view (the robustness benchmark's reports: the val clips and their
re-encodes) and re-decides each twice at the given band: as the pipeline did (views on), and
from the faces as found alone. For each margin it counts the analyses whose crops-alone P(fake)
lies at least `band + margin` from 0.5, which a pipeline could decide without the views, and how
many of those would then get another verdict than the views give them.

    .venv/bin/python benchmarks/views_where_needed.py \
        ~/.cache/deepfake-detector/robustness/reports/<settings hash> --band 0.12

No model runs: the reports hold every face's calibrated P in each view."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.pipeline import video_verdicts  # noqa: E402
from core.results import ENSEMBLE, AnalysisResult  # noqa: E402
from core.robustness.band import without_views  # noqa: E402

MARGINS = (0.0, 0.02, 0.04, 0.06, 0.08, 0.10, 0.12, 0.15, 0.20)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", type=Path, help="a folder of analysis reports (JSON)")
    parser.add_argument("--band", type=float, required=True)
    args = parser.parse_args(argv)

    decided = []   # (transform, P with views, label with views, P alone, label alone)
    for path in sorted(args.reports.glob("*.json")):
        result = AnalysisResult.from_dict(json.loads(path.read_text()))
        if not result.faces or not result.settings.views:
            continue
        result.settings = dataclasses.replace(result.settings, band=args.band)
        alone = without_views(result)
        with_views = video_verdicts(result.faces, result.models, result.settings)[ENSEMBLE]
        without = video_verdicts(alone.faces, alone.models, alone.settings)[ENSEMBLE]
        decided.append((path.name.split("__")[0], with_views.probability, with_views.label,
                        without.probability, without.label))
    if not decided:
        print(f"no report with views and faces in {args.reports}")
        return 1
    shift = sorted(abs(v - a) for _, v, _, a, _ in decided)
    print(f"{len(decided)} analyses at band {args.band}; |P with views - P alone| per clip: median "
          f"{shift[len(shift) // 2]:.3f}, max {shift[-1]:.3f}")
    for margin in MARGINS:
        skippable = [d for d in decided if abs(d[3] - 0.5) >= args.band + margin]
        changed = [d for d in skippable if d[4] != d[2]]
        clean = sum(d[0] == "none" for d in skippable)
        turns = Counter(f"{d[2]}->{d[4]}" for d in changed)
        print(f"margin {margin:.2f}: views skippable on {len(skippable)} of {len(decided)} "
              f"({clean} untransformed), verdict changed on {len(changed)}"
              + (f" ({', '.join(f'{k} {n}' for k, n in sorted(turns.items()))})" if turns else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
