"""The models shipped in `models/` (or another folder): listing, choosing by name, loading."""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from .errors import ModelNotFoundError
from .model_store import Classifier, ModelCard, discover_models, load_classifier

DEFAULT_MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


def available_models(models_dir: str | Path = DEFAULT_MODELS_DIR) -> dict[str, ModelCard]:
    """name -> card, in a stable order."""
    return {card.name: card for card in (ModelCard.load(p) for p in discover_models(models_dir))}


def resolve_selection(selection: str | Iterable[str], models_dir: str | Path = DEFAULT_MODELS_DIR
                      ) -> list[ModelCard]:
    """'all', a comma-separated string, or names -> their cards, with a clear error if any is missing."""
    cards = available_models(models_dir)
    if not cards:
        raise ModelNotFoundError(
            f"no models in {models_dir}; train one (python -m core train) or import one "
            "(python -m core models import-h5)")
    if isinstance(selection, str):
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
