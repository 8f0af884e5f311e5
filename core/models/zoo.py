"""The models shipped in `models/` (or another folder): listing, choosing by name, loading."""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ..errors import ModelError, ModelNotFoundError
from ..verdicts.ensemble import ENSEMBLE_CARD, EnsembleCard, load_ensemble
from .model_store import DEFAULT_RUNTIME, Classifier, ModelCard, discover_models, load_classifier

DEFAULT_MODELS_DIR = Path(__file__).resolve().parents[2] / "models"


def folder_version(folder: str | Path) -> int:
    """Changes whenever a file in the zoo folder is added, removed or renamed into place (every
    model, card and ensemble card is written whole and renamed into place, core.atomic)."""
    try:
        return Path(folder).stat().st_mtime_ns
    except OSError:
        return 0


def available_models(models_dir: str | Path = DEFAULT_MODELS_DIR) -> dict[str, ModelCard]:
    """name -> card, in a stable order."""
    return {card.name: card for card in (ModelCard.load(p) for p in discover_models(models_dir))}


def refused_cards(models_dir: str | Path = DEFAULT_MODELS_DIR) -> list[tuple[str, str]]:
    """(card file, reason) for each JSON in the folder that is not a usable model card (and is
    not the ensemble card): left out of the zoo, reported so an operator sees why."""
    folder = Path(models_dir)
    refused = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        if path.name == ENSEMBLE_CARD:
            continue
        try:
            ModelCard.load(path)
        except ModelError as error:
            refused.append((path.name, str(error)))
    return refused


def fitted_ensemble(models_dir: str | Path = DEFAULT_MODELS_DIR,
                    cards: dict[str, ModelCard] | None = None) -> EnsembleCard | None:
    """The folder's fitted ensemble when every member is present and unchanged since fitting;
    None when there is none or it is stale (a member retrained, replaced or removed). `cards`:
    the folder's cards when the caller has already read them."""
    card = load_ensemble(models_dir)
    if card is None:
        return None
    cards = available_models(models_dir) if cards is None else cards
    sha256 = {name: c.sha256 for name, c in cards.items()}
    return None if card.stale_members(sha256) else card


def default_selection(models_dir: str | Path = DEFAULT_MODELS_DIR) -> list[str]:
    """What a verdict runs by default: the fitted ensemble's members, else every model."""
    card = fitted_ensemble(models_dir)
    return card.members if card is not None else list(available_models(models_dir))


def resolve_selection(selection: str | Iterable[str], models_dir: str | Path = DEFAULT_MODELS_DIR
                      ) -> list[ModelCard]:
    """'all', 'default' (see default_selection), a comma-separated string, or names -> their
    cards, with a clear error if any is missing."""
    cards = available_models(models_dir)
    if not cards:
        raise ModelNotFoundError(
            f"no models in {models_dir}; train one (python -m core train) or import one "
            "(python -m core models import-h5)")
    if isinstance(selection, str) and selection.strip() == "default":
        names = default_selection(models_dir)
    elif isinstance(selection, str):
        names = list(cards) if selection.strip() == "all" else [
            n.strip() for n in selection.split(",") if n.strip()]
    else:
        names = list(selection)
    missing = [n for n in names if n not in cards]
    if missing:
        raise ModelNotFoundError(
            f"unknown model {', '.join(missing)}; available: {', '.join(cards)}")
    if not names:
        raise ModelNotFoundError("no model selected")
    return [cards[n] for n in names]


def load_models(selection: str | Iterable[str] = "all",
                models_dir: str | Path = DEFAULT_MODELS_DIR,
                runtime: str = DEFAULT_RUNTIME) -> list[Classifier]:
    return [load_classifier(card.card_path, runtime=runtime)
            for card in resolve_selection(selection, models_dir)]


# Card metric keys written by `models record-eval` from a full-pipeline evaluation on the val split.
PIPELINE_KEYS = ("pipeline_val_video_auc", "pipeline_val_video_log_loss", "pipeline_val_video_accuracy")
ENSEMBLE_AUC_KEY = "ensemble_val_video_auc"
INTERVAL_KEY = "pipeline_val_video_auc_ci95"
DATASETS_KEY = "pipeline_val_datasets"
DATASET_COLUMNS = ("videos", "real_videos", "fake_videos", "auc", "log_loss",
                   "real_called_fake", "fake_called_real")


def _pipeline_metrics(results: dict, name: str, band: float) -> dict:
    """One model's full-pipeline metrics, recomputed from an evaluate results JSON's per-video
    scores: AUC with its bootstrap interval, log loss, accuracy, ECE, the share decided (outside
    the UNCERTAIN band) and right, real clips called FAKE and fake clips called REAL, pooled and
    per dataset."""
    from ..evaluation.evaluate import summarise
    from ..evaluation.metrics import clean

    summary = summarise(results["videos"], [name], band)
    pooled = summary["models"][name]
    values = {
        **dict(zip(PIPELINE_KEYS, (pooled["auc"], pooled["log_loss"], pooled["accuracy"]))),
        INTERVAL_KEY: pooled["auc_ci95"],
        "pipeline_val_ece": pooled["ece"],
        "pipeline_val_decided_share": pooled["decided_share"],
        "pipeline_val_decided_accuracy": pooled["decided_accuracy"],
        "pipeline_val_real_called_fake": pooled["real_called_fake"],
        "pipeline_val_fake_called_real": pooled["fake_called_real"],
        "pipeline_val_real_videos": pooled["real_videos"],
        "pipeline_val_fake_videos": pooled["fake_videos"],
        "pipeline_val_band": band,
        "pipeline_val_videos": pooled["videos"],
        DATASETS_KEY: {dataset: {k: per_model[name][k] for k in DATASET_COLUMNS}
                       for dataset, per_model in summary["datasets"].items()},
    }
    if name in results.get("views", {}):
        # The views its faces were also scored as: ["flip", "jpeg"] or [] (the crops as found).
        values["pipeline_val_views"] = list(results["views"][name])
        if results["views"][name] and "views_per_face" in results:
            # "all": every face in every view; "one": each face in one, in turn.
            values["pipeline_val_views_per_face"] = results["views_per_face"]
    return clean(values)


def _recorded(metrics: dict, values: dict) -> dict:
    """A card's metrics with a new evaluation's values; how its views were scored is the new
    evaluation's only, never left over from an earlier one."""
    kept = {k: v for k, v in metrics.items() if k != "pipeline_val_views_per_face"}
    return {**kept, **values}


def record_evaluation(results: dict, models_dir: str | Path = DEFAULT_MODELS_DIR,
                      band: float | None = None) -> list[str]:
    """Write each model's evaluated metrics (and the ensemble's AUC) into the cards, and the
    ensemble's into the fitted ensemble card when the evaluation used it, so the app, the zoo
    table and CI's quality gate read one source."""
    from .model_store import update_card
    from ..settings import AnalysisSettings

    band = results.get("band", AnalysisSettings().band) if band is None else band
    cards = available_models(models_dir)
    ensemble = results["models"].get("ensemble", {})
    updated = []
    for name in results["models"]:
        if name not in cards:
            continue
        card = cards[name]
        values = _pipeline_metrics(results, name, band)
        values[ENSEMBLE_AUC_KEY] = ensemble.get("auc")
        update_card(card, metrics=_recorded(card.metrics, values))
        updated.append(name)
    fitted = fitted_ensemble(models_dir, cards)
    if fitted is not None and "ensemble" in results["models"] \
            and set(fitted.members) <= set(results["models"]):
        fitted.metrics = _recorded(fitted.metrics, _pipeline_metrics(results, "ensemble", band))
        fitted.save(fitted.card_path)
        updated.append("ensemble")
    return updated


def quality_regressions(results: dict, models_dir: str | Path = DEFAULT_MODELS_DIR,
                        tolerance: float = 0.02) -> list[str]:
    """Messages for every AUC that fell more than `tolerance` below what the cards recorded: the
    ensemble (the default verdict) and each model the evaluation ran."""
    problems = []
    cards = available_models(models_dir)
    fitted = fitted_ensemble(models_dir, cards)
    if fitted is not None and fitted.metrics.get("pipeline_val_video_auc") is not None:
        expected = fitted.metrics["pipeline_val_video_auc"]
    else:
        recorded = [c.metrics.get(ENSEMBLE_AUC_KEY) for c in cards.values()]
        recorded = [v for v in recorded if v is not None]
        if not recorded:
            return ["no card records an ensemble AUC; run `python -m core models record-eval` first"]
        expected = max(recorded)
    actual = results["models"]["ensemble"]["auc"]
    if actual is None or actual < expected - tolerance:
        problems.append(f"ensemble val AUC {actual} is more than {tolerance} below the cards' "
                        f"{expected:.4f}")
    for name, metrics in results["models"].items():
        recorded = cards[name].metrics.get(PIPELINE_KEYS[0]) if name in cards else None
        if recorded is not None and (metrics["auc"] is None
                                     or metrics["auc"] < recorded - tolerance):
            problems.append(f"{name} val AUC {metrics['auc']} is more than {tolerance} below "
                            f"its card's {recorded:.4f}")
    return problems


def _number(value, digits=3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _auc_text(metrics: dict) -> str:
    auc = metrics.get("pipeline_val_video_auc", metrics.get("val_video_auc"))
    interval = metrics.get(INTERVAL_KEY)
    return _number(auc) + (f" [{interval[0]:.2f}, {interval[1]:.2f}]" if interval else "")


def _share(value) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def _calls_text(m: dict, key: str, of: str) -> str:
    count = m.get(f"pipeline_val_{key}")
    return "n/a" if count is None else f"{count}/{m.get(f'pipeline_val_{of}_videos')}"


def training_seconds(training: dict) -> float | None:
    """The wall time that made a model: its own run's, and for an averaged model (a model soup)
    each member's training as well, since the average is only as cheap as its members were."""
    own = training.get("wall_seconds")
    members = [training_seconds(m.get("training") or {}) for m in training.get("members") or []]
    if own is None and not any(t is not None for t in members):
        return None
    return (own or 0.0) + sum(t for t in members if t is not None)


def zoo_markdown(models_dir: str | Path = DEFAULT_MODELS_DIR) -> str:
    """The model zoo table, generated from the cards, with the fitted ensemble as the last row."""
    rows = ["| model | backbone | depth (cut layer) | input | params | size | training time | "
            "temperature | val video AUC [95% interval] | log loss | ECE | real called FAKE | "
            "fake called REAL | decided | accuracy when decided |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- "
            "| --- |"]

    def measured(m: dict) -> str:
        loss = m.get("pipeline_val_video_log_loss", m.get("val_video_log_loss"))
        return (f"{_auc_text(m)} | {_number(loss)} | {_number(m.get('pipeline_val_ece'))} | "
                f"{_calls_text(m, 'real_called_fake', 'real')} | "
                f"{_calls_text(m, 'fake_called_real', 'fake')} | "
                f"{_share(m.get('pipeline_val_decided_share'))} | "
                f"{_share(m.get('pipeline_val_decided_accuracy'))} |")

    cards = available_models(models_dir)
    for name, card in cards.items():
        minutes = training_seconds(card.training)
        accelerator = (card.training.get("machine") or {}).get("accelerator", "cpu")
        rows.append(
            f"| {name} | {card.backbone} | {card.depth} | {card.input_size} | "
            f"{card.params / 1e6:.2f} M | {card.size_bytes / 2**20:.1f} MB | "
            f"{'n/a' if minutes is None else f'{minutes / 60:.0f} min'}"
            f"{'' if accelerator == 'cpu' or minutes is None else ' (GPU)'} | "
            f"{card.temperature:.2f} | {measured(card.metrics)}")
    fitted = fitted_ensemble(models_dir, cards)
    if fitted is not None:
        members = " + ".join(f"{w:.2f} × {n}" for n, w in fitted.weights.items())
        rows.append(f"| **ensemble (default)** | {members} | | | | | | {fitted.temperature:.2f} | "
                    f"{measured(fitted.metrics)}")
    return "\n".join(rows)


def datasets_markdown(models_dir: str | Path = DEFAULT_MODELS_DIR) -> str:
    """The default verdict's validation numbers per dataset, from the fitted ensemble's card."""
    fitted = fitted_ensemble(models_dir)
    per_dataset = (fitted.metrics if fitted is not None else {}).get(DATASETS_KEY) or {}
    rows = ["| dataset | clips | real | fake | AUC | log loss | real called FAKE | "
            "fake called REAL |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for dataset, m in per_dataset.items():
        rows.append(f"| {dataset} | {m['videos']} | {m['real_videos']} | {m['fake_videos']} | "
                    f"{_number(m.get('auc'))} | {_number(m.get('log_loss'))} | "
                    f"{m['real_called_fake']}/{m['real_videos']} | "
                    f"{m['fake_called_real']}/{m['fake_videos']} |")
    return "\n".join(rows)
