"""How wide the UNCERTAIN band should be: every clip of a labelled set, untouched and through each
everyday transform, re-decided at each candidate band from its stored report (the same faces,
scores and views, core.pipeline.video_verdicts), and the band chosen by the product's costs,
narrower than the reference where the evidence allows it, wider where that pays.

A real clip called FAKE is the costliest error, so no candidate may call more real clips FAKE
than the reference band does, on the untouched clips or under any transform. Past that, a fake
called REAL and an UNCERTAIN that could have been a right answer cost about the same: a band
that decides more clips gains one for each newly right verdict and loses one for each newly
wrong one. The chosen band is the one with the least (fakes called REAL - right verdicts) over
all sets; on a tie the wider one."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from ..pipeline import video_verdicts
from ..results import ENSEMBLE, AnalysisResult
from ..verdicts.views import ORIGINAL

BAND_GRID = tuple(round(0.01 * step, 2) for step in range(0, 21))


def redecide(result: AnalysisResult, band: float, model: str = ENSEMBLE) -> str:
    """The label an analysed clip gets at another band (NO_FACE stays NO_FACE)."""
    settings = dataclasses.replace(result.settings, band=band)
    return video_verdicts(result.faces, result.models, settings)[model].label


def without_views(result: AnalysisResult, models=None) -> AnalysisResult:
    """The same analysis as if `models` (default: every model and the ensemble) had scored no
    view: each of their faces' P is its original view's, as AnalysisSettings.views_on leaves a
    model outside the verdict."""
    models = set(result.scored_views) if models is None else set(models)
    if any(ORIGINAL not in f.views.get(m, {ORIGINAL: 0}) for f in result.faces for m in models):
        raise ValueError("without_views needs an analysis whose faces were all scored as found "
                         "(views_per_face all)")
    faces = [dataclasses.replace(
        f, scores={m: (f.views[m][ORIGINAL] if m in models else p) for m, p in f.scores.items()},
        views={m: ({ORIGINAL: v[ORIGINAL]} if m in models else v) for m, v in f.views.items()})
        for f in result.faces]
    return dataclasses.replace(result, faces=faces)


def count_calls(labelled: Sequence[tuple[int, str]]) -> dict:
    """Real clips called FAKE, fakes called REAL, clips decided and decided right."""
    decided = [(y, label) for y, label in labelled if label in ("REAL", "FAKE")]
    return {"clips": len(labelled), "real": sum(y == 0 for y, _ in labelled),
            "fake": sum(y == 1 for y, _ in labelled),
            "real_called_fake": sum(y == 0 and label == "FAKE" for y, label in decided),
            "fake_called_real": sum(y == 1 and label == "REAL" for y, label in decided),
            "decided": len(decided),
            "right": sum((label == "FAKE") == (y == 1) for y, label in decided)}


def band_table(reports: Mapping[str, Sequence[tuple[int, Mapping]]],
               bands: Sequence[float] = BAND_GRID, model: str = ENSEMBLE) -> list[dict]:
    """Per band: the calls on each set (a transform's name -> (label, stored report) per clip),
    and their sum."""
    analysed = {name: [(y, AnalysisResult.from_dict(report)) for y, report in rows]
                for name, rows in reports.items()}
    table = []
    for band in bands:
        sets = {name: count_calls([(y, redecide(result, band, model)) for y, result in rows])
                for name, rows in analysed.items()}
        pooled = {key: sum(s[key] for s in sets.values()) for key in next(iter(sets.values()))}
        table.append({"band": float(band), "sets": sets, "pooled": pooled})
    return table


def choose_band(table: Sequence[dict], reference: float) -> dict:
    """The band the costs choose (see the module's docstring), with the reference's row and why."""
    by_band = {row["band"]: row for row in table}
    if reference not in by_band:
        raise ValueError(f"the reference band {reference:g} is not among the candidates")
    base = by_band[reference]

    def accuses_more(row: dict) -> bool:
        return any(row["sets"][name]["real_called_fake"] > counts["real_called_fake"]
                   for name, counts in base["sets"].items())

    def cost(row: dict) -> int:
        return row["pooled"]["fake_called_real"] - row["pooled"]["right"]

    allowed = [row for row in table if not accuses_more(row)]
    best = min(allowed, key=lambda row: (cost(row), -row["band"]))
    return {"band": best["band"], "reference": reference,
            "gain": cost(base) - cost(best),
            "excluded": [row["band"] for row in table if accuses_more(row)]}


def format_band_table(table: Sequence[dict], choice: Mapping) -> str:
    """One line per band: the pooled calls, and the sets where real clips are called FAKE."""
    lines = ["band  decided      right  fake→REAL  real→FAKE (sets)"]
    for row in table:
        p = row["pooled"]
        accusing = ", ".join(f"{name} {s['real_called_fake']}/{s['real']}"
                             for name, s in row["sets"].items() if s["real_called_fake"])
        mark = ("  <- chosen" if row["band"] == choice["band"] else "") + (
            "  (reference)" if row["band"] == choice["reference"] else "")
        lines.append(f"{row['band']:4.2f}  {p['decided']:3d}/{p['clips']:<4d}  {p['right']:4d}/"
                     f"{p['decided']:<4d} {p['fake_called_real']:3d}/{p['fake']:<4d}  "
                     f"{p['real_called_fake']:3d}/{p['real']:<4d} ({accusing or 'none'}){mark}")
    lines.append(f"chosen band {choice['band']:g} (reference {choice['reference']:g}): "
                 f"{choice['gain']:+d} right verdicts net of fakes called REAL over all sets; "
                 "bands that call more real clips FAKE on some set than the reference: "
                 + (", ".join(f"{b:g}" for b in choice["excluded"]) or "none"))
    return "\n".join(lines)
