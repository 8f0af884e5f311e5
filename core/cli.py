"""`python -m core ...`: batch scans, evaluation, the model zoo, and (from core.training)
extraction and training. Errors print one line and exit 2; heavy imports happen per command."""
from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from .errors import DetectorError, NoVideosFoundError

VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}


def _add_analysis_options(parser: argparse.ArgumentParser) -> None:
    from .settings import VIEWS_ON, VIEWS_PER_FACE, AnalysisSettings
    from .verdicts.verdict import RULES

    defaults = AnalysisSettings()
    parser.add_argument("--models", default="default",
                        help="'default' (the fitted ensemble's members, else all), 'all', or "
                             "comma-separated model names")
    parser.add_argument("--ensemble", choices=("fitted", "mean"), default="fitted",
                        help="fitted: the weights in MODELS_DIR/ensemble.json when all its "
                             "members run; mean: the plain mean of the models run")
    parser.add_argument("--models-dir", type=Path, default=None, help="folder of .keras models and cards")
    parser.add_argument("--frames", type=int, default=defaults.frames, help="frames sampled per video")
    parser.add_argument("--rule", choices=RULES, default=defaults.rule, help="aggregation rule")
    parser.add_argument("--band", type=float, default=defaults.band,
                        help="half-width of the UNCERTAIN band around 0.5")
    parser.add_argument("--min-confidence", type=float, default=defaults.min_confidence,
                        help="MTCNN face confidence threshold")
    parser.add_argument("--margin", type=float, default=defaults.margin, help="face crop margin")
    parser.add_argument("--detect-long-side", type=int, default=defaults.detect_long_side,
                        help="long side of the frame copy MTCNN runs on")
    parser.add_argument("--views", default=defaults.views,
                        help="other views of each face scored beside it, comma-separated "
                             f"(flip, jpeg; 'none' for the crop alone; default {defaults.views}): "
                             "P(fake) is their mean, and a verdict they disagree on is UNCERTAIN")
    parser.add_argument("--views-on", choices=VIEWS_ON, default=defaults.views_on,
                        help="which models score the views: verdict, those whose scores make the "
                             "verdict (the fitted ensemble's members); all, every model "
                             f"(default {defaults.views_on})")
    parser.add_argument("--views-per-face", choices=VIEWS_PER_FACE, default=defaults.views_per_face,
                        help="all: each face of a clip scored as found and in every view; one: "
                             "in one of them, in turn along each person's faces (one network "
                             f"pass a face instead of three; default {defaults.views_per_face})")
    parser.add_argument("--small-face-px", type=int, default=defaults.small_face_px,
                        help="a clip whose faces are mostly narrower than this (video pixels) "
                             "is UNCERTAIN (0: off)")


def _settings(args):
    from .settings import AnalysisSettings

    return AnalysisSettings(frames=args.frames, rule=args.rule, band=args.band,
                            min_confidence=args.min_confidence, margin=args.margin,
                            detect_long_side=args.detect_long_side, views=args.views,
                            views_on=args.views_on, views_per_face=args.views_per_face,
                            small_face_px=args.small_face_px)


def find_videos(paths: list[Path], photos: bool = False) -> list[Path]:
    """The files named and, in the folders named, every video (and with `photos`, every photo)."""
    from .media.image import IMAGE_SUFFIXES

    suffixes = VIDEO_SUFFIXES | (set(IMAGE_SUFFIXES) if photos else set())
    videos: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in suffixes and p.is_file())
            if not found:
                raise NoVideosFoundError(f"no videos{' or photos' if photos else ''} in folder "
                                         f"{path}")
            videos.extend(found)
        elif path.exists():
            videos.append(path)
        else:
            raise NoVideosFoundError(f"{path} does not exist")
    return videos


def _add_engine_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="local: one video after another in this process; ray: one worker "
                             "per core (or per cluster CPU), each loading the models once")
    parser.add_argument("--address", default=None,
                        help="with --engine ray: join the Ray cluster at this address (e.g. "
                             "auto or HOST:6379) instead of starting a local one; every node "
                             "must see the videos and this checkout at the same paths")
    parser.add_argument("--workers", type=_positive_int, default=None,
                        help="with --engine ray: workers to run (default: as many as fit the "
                             "CPUs and memory)")
    parser.add_argument("--max-attempts", type=_positive_int, default=None,
                        help="with --engine ray: tries per video when its worker dies (default 3)")
    parser.add_argument("--threads", type=_positive_int, default=None,
                        help="TensorFlow threads per analysis (default: every core for local, "
                             "1 per Ray worker); scores match to the last digit only at equal "
                             "thread counts")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _scanner_config(args, annotate_dir: Path | None = None, threads: int | None = None):
    from .scan.scanner import ScannerConfig

    return ScannerConfig(models=args.models, ensemble=args.ensemble, settings=_settings(args),
                         models_dir=str(args.models_dir) if args.models_dir else None,
                         annotate_dir=str(annotate_dir) if annotate_dir else None,
                         threads=threads)


def _engine_starter(args, config):
    from .scan.run import make_engine
    from .models.zoo import DEFAULT_MODELS_DIR, resolve_selection

    if args.engine == "local" and (args.address or args.workers or args.max_attempts):
        raise ValueError("--address, --workers and --max-attempts are for --engine ray")
    resolve_selection(args.models, args.models_dir or DEFAULT_MODELS_DIR)   # fail before starting
    return lambda: make_engine(args.engine, config, address=args.address, workers=args.workers,
                               max_attempts=args.max_attempts)


@contextmanager
def _terminate_as_interrupt():
    """SIGTERM (a scheduler's or `kill`'s stop) ends a scan like Ctrl-C: workers stopped, the
    summary of what is done written, resumable. Yields `rearm`, to call after starting Ray,
    whose driver puts its own abort-on-SIGTERM in place."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield lambda: signal.signal(signal.SIGTERM, interrupt)
    finally:
        signal.signal(signal.SIGTERM, previous)


def cmd_analyze(args) -> int:
    from .scan.jobs import SUMMARY, plan
    from .scan.run import scan_to_folder

    out_dir: Path = args.out
    jobs = plan(find_videos(args.paths, photos=True))
    config = _scanner_config(args, annotate_dir=out_dir if args.annotate else None,
                             threads=args.threads)
    start_engine = _engine_starter(args, config)
    try:
        with _terminate_as_interrupt() as rearm:
            def start():
                engine = start_engine()
                rearm()
                return engine

            outcomes = scan_to_folder(jobs, start, out_dir, annotated=args.annotate)
    except KeyboardInterrupt:
        done = sum((out_dir / f"{job.stem}.json").is_file() for job in jobs)
        print(f"interrupted: {done} of {len(jobs)} reports in {out_dir}/; the same command "
              "resumes with the rest", file=sys.stderr)
        return 130
    skipped = sum(o.skipped for o in outcomes)
    failed = sum(o.failed for o in outcomes)
    print(f"wrote {out_dir}/ (a JSON and a CSV per file, {SUMMARY})"
          + (f"; {skipped} already done, kept" if skipped else "")
          + (f"; {failed} failed" if failed else ""))
    return 2 if failed else 0


def cmd_evaluate(args) -> int:
    from .verdicts.ensemble import choose as choose_ensemble
    from .verdicts.ensemble import weights_text
    from .evaluation.evaluate import evaluate, format_report, load_labels, schema_only
    from .scan.jobs import ScannedResult, plan
    from .scan.run import scan_all
    from .models.zoo import DEFAULT_MODELS_DIR, fitted_ensemble

    videos = load_labels(args.labels, split=args.split)
    config = _scanner_config(args, threads=args.threads)
    started = time.perf_counter()
    engine = _engine_starter(args, config)()
    try:
        outcomes = scan_all(plan([v.path for v in videos]), engine, desc="evaluate")
        names = engine.model_names
    finally:
        engine.close()
    results = iter(outcomes)
    settings = config.settings
    report = evaluate(videos, lambda path: ScannedResult.of(next(results)), names,
                      band=settings.band)
    report["seconds"] = time.perf_counter() - started      # the scan, not the look-ups
    if report.get("views"):
        report["views_per_face"] = settings.views_per_face
    print(format_report(report))
    ensemble = (fitted_ensemble(args.models_dir or DEFAULT_MODELS_DIR)
                if args.ensemble == "fitted" else None)
    mix = choose_ensemble(names, ensemble)
    print("ensemble: " + (f"fitted ({weights_text(mix.weights)}; {mix.card.card_path})"
                          if mix.card is not None else f"mean of {', '.join(mix.weights)}")
          + f"; decided = outside the UNCERTAIN band of {settings.band:g}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(schema_only(report), indent=2))
        print(f"wrote {args.out}")
    return 0


def cmd_robustness(args) -> int:
    """Every clip of a labelled set through each everyday transform, the verdicts compared."""
    from tqdm import tqdm

    from .evaluation.evaluate import load_labels
    from .evaluation.metrics import clean
    from .robustness.band import BAND_GRID, format_band_table
    from .robustness.bench import cache_root, format_results, markdown_table, run_benchmark
    from .robustness.transforms import TRANSFORMS

    videos = load_labels(args.labels, split=args.split)
    transforms = ([t.strip() for t in args.transforms.split(",") if t.strip()]
                  if args.transforms else list(TRANSFORMS))
    config = _scanner_config(args, threads=args.threads)
    start_engine = _engine_starter(args, config)
    with tqdm(total=len(videos) * (len(transforms) + 1), desc="transforms", unit="clip") as bar:
        results = run_benchmark(videos, transforms, config, start_engine,
                                cache=args.cache / "robustness" if args.cache else cache_root(),
                                on_clip=lambda done, total: bar.update(done - bar.n),
                                bands=BAND_GRID if args.choose_band else None)
    for model in args.show.split(",") if args.show else ["ensemble"]:
        print((markdown_table if args.markdown else format_results)(results, model.strip()))
    if args.choose_band:
        print(format_band_table(results["bands"], results["band_choice"]))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(clean(results), indent=2))
        print(f"wrote {args.out}")
    return 0


def _held_weights(text: str | None, names: list[str]) -> dict[str, float] | None:
    """--weights NAME=W,...: the weights to hold while the calibration is fitted."""
    if not text:
        return None
    held = {}
    for part in text.split(","):
        name, _, value = part.strip().partition("=")
        if name not in names:
            raise SystemExit(f"--weights: {name!r} is not one of the models run ({', '.join(names)})")
        try:
            held[name] = float(value)
        except ValueError:
            raise SystemExit(f"--weights: {part.strip()!r} is not NAME=WEIGHT") from None
    return held


def cmd_models_fit_ensemble(args) -> int:
    """Analyse the labelled videos once with every chosen model, fit the ensemble's weights and
    calibration on them, and write MODELS_DIR/ensemble.json."""
    from tqdm import tqdm

    from .verdicts.ensemble import ENSEMBLE_CARD, VideoFaces, fit_ensemble, weights_text
    from .errors import VideoError
    from .evaluation.evaluate import load_labels
    from .pipeline import analyze_video
    from .models.zoo import DEFAULT_MODELS_DIR

    videos = load_labels(args.labels, split=args.split)
    transforms = [t.strip() for t in (args.transforms or "").split(",") if t.strip()]
    config = _scanner_config(args)
    settings = config.settings
    detector, classifiers, _ = config.load()
    names = [c.name for c in classifiers]
    # Each clip, and each clip through each everyday transform (the robustness benchmark's,
    # from its cache): a verdict that must hold under re-encoding is calibrated on re-encodes.
    clips = [(video.path, video.label) for video in videos]
    if transforms:
        from .robustness.bench import cache_root, content_key, transformed_clip

        for video in tqdm(videos, desc="transform", unit="video"):
            key = content_key(video.path)
            clips += [(transformed_clip(name, video.path, key, cache_root()), video.label)
                      for name in transforms]
    fitted: list[VideoFaces] = []
    for path, label in tqdm(clips, desc="analyse", unit="clip"):
        try:
            result = analyze_video(path, detector, classifiers, settings, keep_images=False)
            faces = [(f.person_id, f.frame_index, {n: f.scores[n] for n in names})
                     for f in result.faces]
        except VideoError as error:
            print(f"warning: {path}: {error}")
            faces = []
        fitted.append(VideoFaces(label, faces))
    held = _held_weights(args.weights, names)
    card = fit_ensemble(
        fitted, names, rule=settings.rule, band=settings.band,
        member_sha256={c.name: c.card.sha256 for c in classifiers},
        min_temperature=args.min_temperature, weights=held,
        fitted_on={"labels": str(args.labels), "split": args.split, "videos": len(videos),
                   "transforms": transforms, "clips": len(clips),
                   "min_temperature": args.min_temperature,
                   "settings": settings.to_dict(),
                   "search": ("weights held, calibration fitted" if held else
                              "simplex grid in quarters, max video AUC, then calibration")})
    out = (args.models_dir or DEFAULT_MODELS_DIR) / ENSEMBLE_CARD
    card.save(out)
    m = card.metrics
    interval = m["val_video_auc_ci95"]
    print(f"weights: {weights_text(card.weights)}; threshold {card.threshold:.4f}, "
          f"temperature {card.temperature:.3f}")
    print(f"video AUC {m['val_video_auc']:.3f}"
          + (f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "")
          + f", log loss {m['val_video_log_loss']:.3f}, decided {m['val_decided_share']:.0%} "
          f"(accuracy {m['val_decided_accuracy'] or 0:.0%}); members alone: "
          + ", ".join(f"{n} {a:.3f}" for n, a in m["member_val_video_auc"].items()))
    print(f"wrote {out}")
    return 0


def cmd_models_list(args) -> int:
    from .models.zoo import DEFAULT_MODELS_DIR, available_models, refused_cards

    folder = args.models_dir or DEFAULT_MODELS_DIR
    cards = available_models(folder)
    if not cards:
        print("no models")
    for card_file, reason in refused_cards(folder):
        print(f"left out: {reason}")
    for name, card in cards.items():
        auc = card.metrics.get("val_video_auc")
        print(f"{name:<28} {card.backbone:<18} depth={card.depth:<18} input={card.input_size:<4} "
              f"threshold={card.threshold:.3f} val_auc={'n/a' if auc is None else f'{auc:.3f}'}")
    return 0


def cmd_models_import_h5(args) -> int:
    from .models.h5_import import import_h5
    from .models.zoo import DEFAULT_MODELS_DIR

    card = import_h5(args.file, args.backbone, args.name, args.models_dir or DEFAULT_MODELS_DIR,
                     preprocessing=args.preprocessing)
    print(f"imported {args.file} as {card.name} ({card.backbone}, sha256 {card.sha256[:12]}...)")
    return 0


def cmd_models_record_eval(args) -> int:
    from .models.zoo import DEFAULT_MODELS_DIR, record_evaluation

    results = json.loads(args.results.read_text())
    names = record_evaluation(results, args.models_dir or DEFAULT_MODELS_DIR, band=args.band)
    print(f"recorded the evaluation in the cards of {', '.join(names) or 'no model'}")
    return 0


def cmd_models_check_quality(args) -> int:
    from .models.zoo import DEFAULT_MODELS_DIR, quality_regressions

    results = json.loads(args.results.read_text())
    problems = quality_regressions(results, args.models_dir or DEFAULT_MODELS_DIR, args.tolerance)
    for problem in problems:
        print(f"quality gate: {problem}", file=sys.stderr)
    if not problems:
        print(f"quality gate: ensemble val AUC {results['models']['ensemble']['auc']:.4f} and "
              f"{len(results['models']) - 1} model(s) hold")
    return 1 if problems else 0


def cmd_models_table(args) -> int:
    from .models.zoo import DEFAULT_MODELS_DIR, zoo_markdown

    print(zoo_markdown(args.models_dir or DEFAULT_MODELS_DIR))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core", description="Deepfake video detector")
    commands = parser.add_subparsers(dest="command", required=True)

    analyze = commands.add_parser(
        "analyze", help="score videos and photos: a JSON and a CSV per file")
    analyze.add_argument("paths", nargs="+", type=Path,
                         help="video or photo (JPEG, PNG, WebP, BMP) files, or folders of them")
    _add_analysis_options(analyze)
    _add_engine_options(analyze)
    analyze.add_argument("--out", type=Path, default=Path("out"),
                         help="output folder; a rerun over it keeps the reports already there")
    analyze.add_argument("--annotate", action="store_true",
                         help="also write the annotated copy per file: H.264 MP4 for a video, "
                              "JPEG for a photo")
    analyze.set_defaults(run=cmd_analyze)

    evaluate = commands.add_parser(
        "evaluate", help="video-level AUC, log loss, ECE, real clips called FAKE and fakes "
                         "called REAL on a labelled set, pooled and per dataset")
    evaluate.add_argument("labels", type=Path, help="CSV with path,label columns or a DFDC folder")
    evaluate.add_argument("--split", default=None, help="only rows whose split column matches")
    _add_analysis_options(evaluate)
    _add_engine_options(evaluate)
    evaluate.add_argument("--out", type=Path, default=None, help="write the results JSON here")
    evaluate.set_defaults(run=cmd_evaluate)

    robustness = commands.add_parser(
        "robustness", help="every clip re-encoded, scaled, relit and blurred: how verdicts hold")
    robustness.add_argument("labels", type=Path, help="CSV with path,label columns or a DFDC folder")
    robustness.add_argument("--split", default=None, help="only rows whose split column matches")
    robustness.add_argument("--transforms", default=None,
                            help="comma-separated transform names (default: all of them)")
    robustness.add_argument("--cache", type=Path, default=None,
                            help="cache folder (default $DEEPFAKE_CACHE or ~/.cache/deepfake-detector)")
    robustness.add_argument("--choose-band", action="store_true",
                            help="also re-decide every clip at each UNCERTAIN band from 0 to 0.2 "
                                 "and print the one the costs choose: no set with more real clips "
                                 "called FAKE than at --band, then the most right verdicts net of "
                                 "fakes called REAL (narrower or wider than --band)")
    robustness.add_argument("--show", default=None,
                            help="comma-separated models to print a table for (default: ensemble)")
    robustness.add_argument("--markdown", action="store_true", help="print the tables as markdown")
    _add_analysis_options(robustness)
    _add_engine_options(robustness)
    robustness.add_argument("--out", type=Path, default=None, help="write the results JSON here")
    robustness.set_defaults(run=cmd_robustness)

    models = commands.add_parser("models", help="list or import models")
    model_commands = models.add_subparsers(dest="models_command", required=True)
    listing = model_commands.add_parser("list", help="the models and their cards")
    listing.add_argument("--models-dir", type=Path, default=None)
    listing.set_defaults(run=cmd_models_list)
    importer = model_commands.add_parser("import-h5", help="import an origin-project Keras 2 .h5")
    importer.add_argument("file", type=Path)
    importer.add_argument("--backbone", required=True)
    importer.add_argument("--name", required=True)
    importer.add_argument("--preprocessing", default="raw",
                          help="what the source model expected in front of its backbone (default raw [0,255])")
    importer.add_argument("--models-dir", type=Path, default=None)
    importer.set_defaults(run=cmd_models_import_h5)

    record = model_commands.add_parser("record-eval", help="write an evaluate results JSON into the cards")
    record.add_argument("results", type=Path)
    record.add_argument("--band", type=float, default=None,
                        help="the UNCERTAIN band the evaluation used (default: the app's)")
    record.add_argument("--models-dir", type=Path, default=None)
    record.set_defaults(run=cmd_models_record_eval)
    check = model_commands.add_parser("check-quality",
                                      help="fail if the ensemble AUC fell below the cards' value")
    check.add_argument("results", type=Path)
    check.add_argument("--tolerance", type=float, default=0.02)
    check.add_argument("--models-dir", type=Path, default=None)
    check.set_defaults(run=cmd_models_check_quality)
    fit = model_commands.add_parser(
        "fit-ensemble", help="fit the ensemble's weights and calibration on a labelled split")
    fit.add_argument("labels", type=Path, help="CSV with path,label columns or a DFDC folder")
    fit.add_argument("--split", default="val", help="rows whose split column matches (default val)")
    _add_analysis_options(fit)
    fit.add_argument("--transforms", default=None,
                     help="also fit on each clip through these robustness transforms, "
                          "comma-separated (made and cached as `robustness` does)")
    fit.add_argument("--min-temperature", type=float, default=1.0,
                     help="the lowest ensemble temperature searched (default 1: the verdict is "
                          "never surer than its members)")
    fit.add_argument("--weights", default=None,
                     help="NAME=W,...: hold these member weights and fit only the threshold and "
                          "temperature (default: search the weights too)")
    fit.set_defaults(run=cmd_models_fit_ensemble, models="all")
    table = model_commands.add_parser("table", help="the model zoo table (markdown) from the cards")
    table.add_argument("--models-dir", type=Path, default=None)
    table.set_defaults(run=cmd_models_table)

    from .training.cli import register as register_training

    register_training(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Cards record exactly how a model was made.
    args.command_line = "python -m core " + shlex.join(sys.argv[1:] if argv is None else argv)
    try:
        return args.run(args)
    except (DetectorError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
