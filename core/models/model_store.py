"""The one model contract: NAME.keras takes RGB float [0, 255] at its own input size (preprocessing
inside) and returns P(fake); NAME.json beside it is the model card, whose sha256 guards the file."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np

from core import atomic
from core.errors import ChecksumMismatchError, ModelError, ModelNotFoundError

if TYPE_CHECKING:   # Keras (and TensorFlow under it) is imported where a model is built or
    import keras    # loaded: reading cards, as the app's server does, needs neither

_log = logging.getLogger(__name__)

PREDICT_BATCH = 32
MIN_INPUT_SIZE, MAX_INPUT_SIZE = 16, 1024
MAX_TEMPERATURE = 100.0
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass
class ModelCard:
    name: str
    backbone: str
    depth: str = "full"
    input_size: int = 224
    params: int = 0
    file: str = ""
    sha256: str = ""
    size_bytes: int = 0
    preprocessing: str = "none"
    training: dict = field(default_factory=dict)
    threshold: float = 0.5
    temperature: float = 1.0
    metrics: dict = field(default_factory=dict)
    created: str = ""
    keras_version: str = ""
    notes: str = ""
    # Where the card was read from or written to; not part of the JSON.
    card_path: Path | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "card_path"}

    @classmethod
    def from_dict(cls, data: dict, card_path: Path | None = None) -> "ModelCard":
        known = {f.name for f in dataclasses.fields(cls)} - {"card_path"}
        missing = {"name", "backbone"} - set(data)
        if missing:
            raise ModelError(f"model card lacks {', '.join(sorted(missing))}")
        card = cls(**{k: v for k, v in data.items() if k in known})
        card.card_path = Path(card_path) if card_path else None
        problem = card.problem()
        if problem:
            where = Path(card_path).name if card_path else card.name
            raise ModelError(f"model card {where} is not usable: {problem}")
        return card

    def problem(self) -> str | None:
        """Why a card read from disk cannot be trusted to describe a model, or None. A card is
        input like any file: its fields decide which file is opened and how scores are read."""
        def number(value) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool) \
                and math.isfinite(value)

        if not isinstance(self.name, str) or not SAFE_NAME.fullmatch(self.name):
            return f"name {self.name!r} must be letters, digits, '.', '_' or '-'"
        if not isinstance(self.input_size, int) or isinstance(self.input_size, bool) \
                or not MIN_INPUT_SIZE <= self.input_size <= MAX_INPUT_SIZE:
            return (f"input_size {self.input_size!r} is not a whole number of pixels in "
                    f"[{MIN_INPUT_SIZE}, {MAX_INPUT_SIZE}]")
        if not number(self.threshold) or not 0.0 < self.threshold < 1.0:
            return f"threshold {self.threshold!r} is not strictly between 0 and 1"
        if not number(self.temperature) or not 0.0 < self.temperature <= MAX_TEMPERATURE:
            return f"temperature {self.temperature!r} is not in (0, {MAX_TEMPERATURE:g}]"
        if self.file and (not isinstance(self.file, str) or Path(self.file).name != self.file
                          or not self.file.endswith(".keras")):
            return f"file {self.file!r} must be a .keras file name beside the card"
        if self.sha256 and not (isinstance(self.sha256, str)
                                and re.fullmatch(r"[0-9a-f]{64}", self.sha256)):
            return "sha256 is not 64 hexadecimal digits"
        if not isinstance(self.metrics, dict) or not isinstance(self.training, dict):
            return "metrics and training must be JSON objects"
        return None

    @classmethod
    def load(cls, path) -> "ModelCard":
        path = Path(path)
        if not path.is_file():
            raise ModelNotFoundError(f"model card not found: {path}")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelError(f"model card {path.name} is not readable JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ModelError(f"model card {path.name} is not a JSON object")
        return cls.from_dict(data, card_path=path)

    def save(self, path=None) -> Path:
        path = Path(path or self.card_path)
        atomic.write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")
        self.card_path = path
        return path

    @property
    def model_path(self) -> Path:
        if self.card_path is None:
            raise ModelError(f"model card {self.name!r} has no location; load it from its JSON file")
        return self.card_path.parent / self.file


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def card_path_for(model_path) -> Path:
    return Path(model_path).with_suffix(".json")


def _preprocessing_of(model: keras.Model) -> str | None:
    from core.models import backbones

    for layer in model.layers:
        if isinstance(layer, backbones.ImageNetPreprocessing):
            return layer.mode
    return None


def save_model(model: keras.Model, path, **card_fields) -> ModelCard:
    """Write PATH (.keras) through a temp file + rename, then its card PATH.json.

    Card fields not given are taken from the model where it knows them (input size, params,
    preprocessing, and backbone/depth from a build_classifier name)."""
    import keras

    from core.models import backbones

    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"model path must end in .keras: {path}")
    name = card_fields.pop("name", path.stem)
    if name != path.stem:
        raise ValueError(f"card name {name!r} must match the file name {path.stem!r}")
    unknown = set(card_fields) - {f.name for f in dataclasses.fields(ModelCard)}
    if unknown:
        raise ValueError(f"unknown model card fields: {', '.join(sorted(unknown))}")

    computed = {"params", "file", "sha256", "size_bytes", "created", "keras_version"} & set(card_fields)
    if computed:
        raise ValueError(f"card fields computed by save_model cannot be given: {', '.join(sorted(computed))}")

    shape = model.input_shape
    if len(shape) != 4 or shape[1] != shape[2] or shape[3] != 3:
        raise ValueError(f"a stored model takes N x S x S x 3 input, this one takes {shape}")
    given_size = card_fields.pop("input_size", None)
    if given_size is not None and int(given_size) != shape[1]:
        raise ValueError(f"input_size {given_size} does not match the model's input {shape[1]}")
    parsed = backbones.parse_model_name(model.name) or ("unknown", "full")
    card_fields.setdefault("backbone", parsed[0])
    card_fields.setdefault("depth", parsed[1])
    card_fields.setdefault("preprocessing", _preprocessing_of(model) or "none")

    with atomic.atomic_path(path) as tmp:
        model.save(tmp)

    card = ModelCard(
        name=name,
        input_size=int(shape[1]),
        params=int(model.count_params()),
        file=path.name,
        sha256=file_sha256(path),
        size_bytes=path.stat().st_size,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        keras_version=keras.__version__,
        **card_fields,
    )
    card.save(card_path_for(path))
    return card


def update_card(card_or_path, *, threshold=None, temperature=None, metrics=None, notes=None,
                training=None) -> ModelCard:
    """Rewrite calibration, metrics or notes on the card; the .keras file is left untouched."""
    card = card_or_path if isinstance(card_or_path, ModelCard) else ModelCard.load(card_or_path)
    if threshold is not None:
        if not 0.0 < float(threshold) < 1.0:
            raise ValueError(f"threshold must be strictly between 0 and 1, got {threshold}")
        card.threshold = float(threshold)
    if temperature is not None:
        if not float(temperature) > 0.0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        card.temperature = float(temperature)
    if metrics is not None:
        card.metrics = dict(metrics)
    if notes is not None:
        card.notes = str(notes)
    if training is not None:
        card.training = dict(training)
    card.save()
    return card


def _resolve_card(path_or_card) -> ModelCard:
    if isinstance(path_or_card, ModelCard):
        return path_or_card
    path = Path(path_or_card)
    if path.suffix == ".keras":
        if not path.is_file():
            raise ModelNotFoundError(f"model file not found: {path}")
        card_path = card_path_for(path)
        if not card_path.is_file():
            raise ModelNotFoundError(f"model card not found beside {path.name}: {card_path}")
        return ModelCard.load(card_path)
    return ModelCard.load(path)


RUNTIMES = ("litert", "tensorflow")
DEFAULT_RUNTIME = "litert"


class Classifier:
    """A loaded model with one traced predict function, safe to call from several threads.

    runtime "litert" (the default) converts that function in memory and runs it on LiteRT
    (core.models.litert_runtime), keeping TensorFlow where LiteRT is missing or cannot convert
    the model; "tensorflow" runs the traced function itself. `self.runtime` says which runs."""

    def __init__(self, model: keras.Model, card: ModelCard, runtime: str = DEFAULT_RUNTIME):
        import tensorflow as tf

        self.model = model
        self.card = card
        self.name = card.name
        self.input_size = int(card.input_size)
        size = self.input_size
        self._lock = threading.Lock()
        # One fixed signature: every batch size reuses the same trace; XLA off for CPU start-up time.
        self._predict_fn = tf.function(
            lambda x: model(x, training=False),
            input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)],
            jit_compile=False,
            reduce_retracing=True,
        )
        self._predict_fn(tf.zeros([1, size, size, 3], tf.float32))
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
        self._forward = lambda batch: np.asarray(self._predict_fn(batch))
        self.runtime = "tensorflow"
        if runtime == "litert":
            from core import litert_runtime

            check = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype(np.float32)
            try:
                pool = litert_runtime.checked_pool(self._predict_fn, check, cache_key=card.sha256)
            except litert_runtime.LiteRTUnavailable as exc:
                _log.warning("%s runs on TensorFlow: %s", self.name, exc)
            else:
                self._forward = lambda batch: litert_runtime.bucketed(pool, batch)[0]
                self.runtime = "litert"

    def predict(self, crops: np.ndarray) -> np.ndarray:
        """uint8 or float RGB [0, 255], N x S x S x 3 -> raw P(fake) float64 of shape (N,)."""
        crops = np.asarray(crops)
        size = self.input_size
        if crops.ndim != 4 or crops.shape[1:] != (size, size, 3):
            raise ValueError(
                f"{self.name} expects N x {size} x {size} x 3 crops, got shape {crops.shape}"
            )
        if crops.shape[0] == 0:
            return np.zeros((0,), dtype=np.float64)
        out = np.empty((crops.shape[0],), dtype=np.float64)
        with self._lock:
            for start in range(0, crops.shape[0], PREDICT_BATCH):
                batch = crops[start:start + PREDICT_BATCH].astype(np.float32, copy=False)
                probs = self._forward(batch)
                out[start:start + len(batch)] = np.asarray(probs, dtype=np.float64).reshape(-1)
        return out

    def __repr__(self):
        return (f"Classifier({self.name!r}, backbone={self.card.backbone!r}, "
                f"input_size={self.input_size}, runtime={self.runtime!r})")


def load_classifier(path_or_card, runtime: str = DEFAULT_RUNTIME) -> Classifier:
    """Check the file against its card's sha256, load it with safe_mode, trace and warm predict."""
    return Classifier(*load_checked_model(path_or_card), runtime=runtime)


def load_checked_model(path_or_card) -> tuple[keras.Model, ModelCard]:
    """The Keras model and its card, after checking the file against the card's sha256, loaded
    with safe_mode; on any Keras backend (Classifier's traced predict needs TensorFlow)."""
    import keras

    from core.models import backbones  # noqa: F401 - registers the preprocessing layer safe_mode loads

    card = _resolve_card(path_or_card)
    model_path = card.model_path
    if not model_path.is_file():
        raise ModelNotFoundError(f"model file for {card.name!r} not found: {model_path}")
    actual = file_sha256(model_path)
    if actual != card.sha256:
        raise ChecksumMismatchError(
            f"{model_path.name} does not match its card (sha256 {actual[:12]}... != "
            f"{card.sha256[:12]}...): the file was changed or replaced; re-import or re-train it"
        )
    try:
        model = keras.models.load_model(model_path, safe_mode=True, compile=False)
    except Exception as exc:  # keras raises many types for unreadable archives
        raise ModelError(f"cannot load {model_path.name}: {str(exc).splitlines()[0]}") from None
    shape = model.input_shape
    if tuple(shape[1:]) != (card.input_size, card.input_size, 3):
        raise ModelError(
            f"{model_path.name} takes {shape[1:]} but its card says {card.input_size}px"
        )
    return model, card


def discover_models(models_dir) -> list[Path]:
    """Sorted card paths of the models in models_dir whose .keras file is present."""
    folder = Path(models_dir)
    if not folder.is_dir():
        return []
    found = []
    for card_path in sorted(folder.glob("*.json")):
        try:
            card = ModelCard.load(card_path)
        except ModelError:
            continue
        if card.file and (folder / card.file).is_file():
            found.append(card_path)
    return found
