"""The models shipped in `models/` (or another folder): listing, choosing by name, loading."""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from .ensemble import EnsembleCard, load_ensemble
from .errors import ModelNotFoundError
from .model_store import Classifier, ModelCard, discover_models, load_classifier

DEFAULT_MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


def available_models(models_dir: str | Path = DEFAULT_MODELS_DIR) -> dict[str, ModelCard]:
    """name -> card, in a stable order."""
    return {card.name: card for card in (ModelCard.load(p) for p in discover_models(models_dir))}


def fitted_ensemble(models_dir: str | Path = DEFAULT_MODELS_DIR) -> EnsembleCard | None:
    """The folder's fitted ensemble when every member is present and unchanged since fitting;
    None when there is none or it is stale (a member retrained, replaced or removed)."""
    card = load_ensemble(models_dir)
    if card is None:
        return None
    sha256 = {name: c.sha256 for name, c in available_models(models_dir).items()}
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
                models_dir: str | Path = DEFAULT_MODELS_DIR) -> list[Classifier]:
    return [load_classifier(card.card_path) for card in resolve_selection(selection, models_dir)]


# Card metric keys written by `models record-eval` from a full-pipeline evaluation on the val split.
PIPELINE_KEYS = ("pipeline_val_video_auc", "pipeline_val_video_log_loss", "pipeline_val_video_accuracy")
ENSEMBLE_AUC_KEY = "ensemble_val_video_auc"


def record_evaluation(results: dict, models_dir: str | Path = DEFAULT_MODELS_DIR) -> list[str]:
    """Write each model's evaluated AUC, log loss and accuracy (and the ensemble's AUC) into the
    cards, so the app, the zoo table and CI's quality gate read one source."""
    from .model_store import update_card

    cards = available_models(models_dir)
    ensemble = results["models"].get("ensemble", {})
    updated = []
    for name, metrics in results["models"].items():
        if name not in cards:
            continue
        card = cards[name]
        values = dict(zip(PIPELINE_KEYS, (metrics["auc"], metrics["log_loss"], metrics["accuracy"])))
        values[ENSEMBLE_AUC_KEY] = ensemble.get("auc")
        update_card(card, metrics={**card.metrics, **values})
        updated.append(name)
    return updated


def quality_regressions(results: dict, models_dir: str | Path = DEFAULT_MODELS_DIR,
                        tolerance: float = 0.02) -> list[str]:
    """Messages for every AUC that fell more than `tolerance` below what the cards recorded."""
    problems = []
    recorded = [c.metrics.get(ENSEMBLE_AUC_KEY) for c in available_models(models_dir).values()]
    recorded = [v for v in recorded if v is not None]
    if not recorded:
        return ["no card records an ensemble AUC; run `python -m core models record-eval` first"]
    expected = max(recorded)
    actual = results["models"]["ensemble"]["auc"]
    if actual is None or actual < expected - tolerance:
        problems.append(f"ensemble val AUC {actual} is more than {tolerance} below the cards' {expected:.4f}")
    return problems


def zoo_markdown(models_dir: str | Path = DEFAULT_MODELS_DIR) -> str:
    """The model zoo table, generated from the cards."""
    def number(value, digits=3):
        return "n/a" if value is None else f"{value:.{digits}f}"

    rows = ["| model | backbone | depth (cut layer) | input | params | size | training time | "
            "val video AUC | log loss | accuracy |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, card in available_models(models_dir).items():
        m = card.metrics
        auc = m.get("pipeline_val_video_auc", m.get("val_video_auc"))
        loss = m.get("pipeline_val_video_log_loss", m.get("val_video_log_loss"))
        accuracy = m.get("pipeline_val_video_accuracy", m.get("val_video_accuracy"))
        minutes = card.training.get("wall_seconds")
        rows.append(
            f"| {name} | {card.backbone} | {card.depth} | {card.input_size} | "
            f"{card.params / 1e6:.2f} M | {card.size_bytes / 2**20:.1f} MB | "
            f"{'n/a' if minutes is None else f'{minutes / 60:.0f} min'} | {number(auc)} | "
            f"{number(loss)} | {number(accuracy)} |")
    return "\n".join(rows)
