"""The robustness benchmark: every clip of a labelled set, untouched and through each everyday
transform (core.robustness.transforms), analysed through the full pipeline; per transform the
verdict's AUC, real clips called FAKE, fake clips called REAL and the mean |change of P(fake)|
against the untouched clip, pooled and on the real clips alone.

Results are cached outside git (DEEPFAKE_CACHE, else ~/.cache/deepfake-detector): the transformed
clips by the source's content and the transform, the reports by those and the models' and
settings' fingerprint, so a rerun with other models re-encodes nothing and a rerun with the same
models analyses nothing."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import av
import numpy as np

from ..atomic import cache_home
from ..evaluation.evaluate import NO_FACE_SCORE, LabelledVideo, summarise
from ..results import ENSEMBLE
from .transforms import CUT, TRANSFORMS, TRANSFORMS_VERSION, apply, suffix

UNTOUCHED = "none"
def cache_root() -> Path:
    return cache_home() / "robustness"


def content_key(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:20]


def transformed_clip(name: str, source: Path, key: str, cache: Path) -> Path:
    """The cached transformed clip, made first if missing (written aside, then renamed, so an
    interrupted run leaves no half clip under the final name)."""
    transform = CUT if name == UNTOUCHED else TRANSFORMS[name]
    target = cache / "clips" / f"v{TRANSFORMS_VERSION}" / name / f"{key}{suffix(transform)}"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".partial-{os.getpid()}-{target.name}")
        try:
            apply(transform, source, partial)
            partial.replace(target)
        finally:
            partial.unlink(missing_ok=True)
    return target


def selection_key(model_sha256: dict[str, str], ensemble_sha256: str | None,
                  settings: dict) -> str:
    """Fingerprint of what decides a report: the models' files, the fitted ensemble's card and
    the analysis settings."""
    text = json.dumps({"models": model_sha256, "ensemble": ensemble_sha256, "settings": settings,
                       "transforms": TRANSFORMS_VERSION}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def describe_selection(config) -> tuple[str, list[str]]:
    """(selection key, model names) for a ScannerConfig, read from the cards without loading
    any model."""
    from ..verdicts.ensemble import ENSEMBLE_CARD
    from ..models.model_store import file_sha256
    from ..models.zoo import DEFAULT_MODELS_DIR, fitted_ensemble, resolve_selection

    models_dir = Path(config.models_dir or DEFAULT_MODELS_DIR)
    cards = resolve_selection(config.models, models_dir)
    ensemble = fitted_ensemble(models_dir) if config.ensemble == "fitted" else None
    ensemble_sha = file_sha256(models_dir / ENSEMBLE_CARD) if ensemble is not None else None
    key = selection_key({c.name: c.sha256 for c in cards}, ensemble_sha,
                        dataclasses.asdict(config.settings))
    return key, [c.name for c in cards]


def run_benchmark(videos: Sequence[LabelledVideo], transforms: Sequence[str], config,
                  start_engine: Callable[[], object], *, cache: Path | None = None,
                  on_clip: Callable[[int, int], None] | None = None,
                  bands: Sequence[float] | None = None) -> dict:
    """Make (or reuse) every transformed clip, analyse (or reuse) every report, and return the
    benchmark's results: {"transforms": {NAME: {"description", "models": summarise per model,
    "change": per model {"mean_abs_change", "mean_abs_change_real", "flips"}}}, "videos": per
    clip and transform the scores}. `bands`: also every clip re-decided at each of these bands
    from its report, and the band chosen (core.robustness.band): "bands", "band_choice"."""
    from ..scan.jobs import ScanJob
    from ..scan.run import scan_to_folder

    unknown = [t for t in transforms if t not in TRANSFORMS]
    if unknown:
        raise ValueError(f"unknown transform {', '.join(unknown)}; choose from "
                         f"{', '.join(TRANSFORMS)}")
    cache = cache or cache_root()
    key, names = describe_selection(config)
    names = [*names, ENSEMBLE]
    jobs, kept, keys, skipped = [], [], [], []
    total = len(videos) * (len(transforms) + 1)
    for number, video in enumerate(videos):
        try:
            clip = content_key(video.path)
            paths = []
            for t_number, name in enumerate((UNTOUCHED, *transforms)):
                paths.append(transformed_clip(name, video.path, clip, cache))
                if on_clip is not None:
                    on_clip(number * (len(transforms) + 1) + t_number + 1, total)
        except (OSError, ValueError, av.error.FFmpegError) as error:
            # A clip that cannot be decoded to the end has no transforms: it is left out and
            # named, as evaluate names an unreadable video, and the benchmark goes on.
            skipped.append(f"{video.path}: {error}")
            print(f"warning: {video.path}: left out, it cannot be re-encoded: {error}")
            continue
        kept.append(video)
        keys.append(clip)
        for name, path in zip((UNTOUCHED, *transforms), paths):
            jobs.append(ScanJob(len(jobs), str(path), f"{name}__{clip}"))
    if not kept:
        raise ValueError("no clip of the set could be re-encoded")
    videos = kept
    outcomes = scan_to_folder(jobs, start_engine, cache / "reports" / key, echo=False)
    by_stem = {o.job.stem: o for o in outcomes}

    def scores(stem: str) -> dict:
        outcome = by_stem[stem]
        if outcome.failed or outcome.report["no_face"]:
            return {"scores": {n: NO_FACE_SCORE for n in names},
                    "calls": {n: "NO_FACE" for n in names}}
        verdicts = outcome.report["verdicts"]
        return {"scores": {n: verdicts[n]["probability"] for n in names},
                "calls": {n: verdicts[n]["label"] for n in names}}

    rows = {name: [] for name in (UNTOUCHED, *transforms)}
    for video, clip in zip(videos, keys):
        for name in rows:
            rows[name].append({"path": str(video.path), "label": video.label,
                               **scores(f"{name}__{clip}"),
                               **({"dataset": video.extra["dataset"]}
                                  if video.extra.get("dataset") else {})})
    band = config.settings.band
    results = {"band": band, "selection": key, "cache": str(cache), "left_out": skipped,
               "transforms": {}}
    for name, members in rows.items():
        entry = {"description": (CUT if name == UNTOUCHED else TRANSFORMS[name]).description,
                 **summarise(members, names, band)}
        if name != UNTOUCHED:
            entry["change"] = {n: score_change(rows[UNTOUCHED], members, n) for n in names}
        results["transforms"][name] = entry
    results["videos"] = rows
    if bands:
        from .band import band_table, choose_band

        stored = {name: [(video.label, by_stem[f"{name}__{clip}"].report)
                         for video, clip in zip(videos, keys)
                         if not by_stem[f"{name}__{clip}"].failed]
                  for name in rows}
        results["bands"] = band_table(stored, bands)
        results["band_choice"] = choose_band(results["bands"], band)
    return results


def score_change(untouched: Sequence[dict], transformed: Sequence[dict], name: str) -> dict:
    """Mean |P(fake) change| over all clips and over the real ones, and how many clips changed
    their verdict label."""
    before = np.array([r["scores"][name] for r in untouched])
    after = np.array([r["scores"][name] for r in transformed])
    real = np.array([r["label"] == 0 for r in untouched])
    change = np.abs(after - before)
    flips = sum(a["calls"][name] != b["calls"][name] for a, b in zip(transformed, untouched))
    return {"mean_abs_change": float(change.mean()),
            "mean_abs_change_real": float(change[real].mean()) if real.any() else None,
            "flips": int(flips)}


def _rows(results: dict, model: str):
    """Per transform: name, description, and the measured cells as text."""
    from ..evaluation.metrics import count_text
    from ..evaluation.metrics import number_text as _fmt

    for name, entry in results["transforms"].items():
        m = entry["models"][model]
        change = entry.get("change", {}).get(model, {})
        yield name, entry["description"], (
            _fmt(m["auc"]), count_text(m, "real_called_fake"), count_text(m, "fake_called_real"),
            _fmt(change.get("mean_abs_change")), _fmt(change.get("mean_abs_change_real")),
            str(change.get("flips", "")))


def format_results(results: dict, model: str = ENSEMBLE) -> str:
    """One line per transform for one model (default: the ensemble, the default verdict)."""
    lines = [f"{model}: band {results['band']:g}",
             f"{'transform':<12} {'AUC':>6} {'real→FAKE':>10} {'fake→REAL':>10} "
             f"{'|ΔP| all':>9} {'|ΔP| real':>9} {'flips':>6}  what"]
    for name, description, (auc, rfake, freal, change, change_real, flips) in _rows(results, model):
        lines.append(f"{name:<12} {auc:>6} {rfake:>10} {freal:>10} {change:>9} {change_real:>9} "
                     f"{flips:>6}  {description}")
    return "\n".join(lines)


def markdown_table(results: dict, model: str = ENSEMBLE) -> str:
    """The per-transform table of one model as markdown, for models/README.md, under a line naming
    the model (several are printed one after another)."""
    rows = [f"{model}, band {results['band']:g}:", "",
            "| transform | AUC | real called FAKE | fake called REAL | mean abs. change of "
            "P(fake), all clips | the same, real clips | verdicts changed |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, description, cells in _rows(results, model):
        rows.append(f"| {name}: {description} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def labelled_reports(folder: Path, labels: Path, split: str | None = None):
    """(transform, clip key, label, AnalysisResult) of each stored report in a folder whose clip
    is among the labelled videos and has faces: what the benchmarks re-deciding reports read."""
    import json

    from ..evaluation.evaluate import load_labels
    from ..results import AnalysisResult

    label_of = {content_key(v.path): v.label for v in load_labels(labels, split=split)}
    for path in sorted(Path(folder).glob("*__*.json")):
        transform, clip = path.stem.split("__", 1)
        if clip not in label_of:
            continue
        result = AnalysisResult.from_dict(json.loads(path.read_text()))
        if result.faces:
            yield transform, clip, label_of[clip], result
