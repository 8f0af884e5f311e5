"""Fixtures shared across test files: tiny real models of each backbone family."""
from __future__ import annotations

import os
import tempfile

# aiortc's SRTP library (under streamlit-webrtc) crashes the process when it is first loaded after
# TensorFlow; the app tests run both in this process, so it is loaded first, as streamlit_app.py does.
import pylibsrtp  # noqa: F401

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(autouse=True, scope="session")
def private_cache(tmp_path_factory):
    """The cache folder (core.atomic.cache_home) of this test session alone, for this process and
    the servers and CLIs it starts: tests never read or fill the machine's own cache."""
    previous = os.environ.get("DEEPFAKE_CACHE")
    os.environ["DEEPFAKE_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if previous is None:
        os.environ.pop("DEEPFAKE_CACHE", None)
    else:
        os.environ["DEEPFAKE_CACHE"] = previous

@pytest.fixture(autouse=True)
def private_tempdir(tmp_path_factory, monkeypatch):
    """Each test's own temporary folder, which the code under test writes to (the tempfile module
    honours tempfile.tempdir and TMPDIR): a "no temporary file left" check sees only this test's
    files, never those another program creates in the machine's temp folder meanwhile."""
    folder = tmp_path_factory.mktemp("tmp")
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    monkeypatch.setenv("TMPDIR", str(folder))
    return folder


# Shallow cuts keep every family real (its own keras.applications graph and preprocessing) but fast.
TINY_CUTS = {
    "efficientnetb7": ("block1a_project_bn", 64),
    "inceptionresnetv2": ("mixed_5b", 75),
    "inceptionv3": ("mixed0", 75),
    "resnet50": ("conv2_block1_out", 64),
    "vgg16": ("block2_pool", 64),
}


def make_tiny_model(folder, backbone: str, *, name: str | None = None, threshold: float = 0.5,
                    temperature: float = 1.0, seed: int = 0, constant_output: float | None = None):
    """An untrained tiny model saved with its card. `constant_output` zeroes the head's kernel
    and sets its bias so every face gets exactly that P(fake): a model whose verdict is known."""
    import math

    import keras
    import numpy as np

    from core.models.backbones import HEAD_LAYER, build_classifier
    from core.models.model_store import save_model

    keras.utils.set_random_seed(seed)
    depth, size = TINY_CUTS[backbone]
    model = build_classifier(backbone, depth=depth, input_size=size)
    if constant_output is not None:
        head = model.get_layer(HEAD_LAYER)
        kernel, _ = head.get_weights()
        logit = math.log(constant_output / (1 - constant_output))
        head.set_weights([np.zeros_like(kernel), np.array([logit], dtype=np.float32)])
    name = name or f"tiny_{backbone}"
    return save_model(model, folder / f"{name}.keras", name=name, backbone=backbone, depth=depth,
                      threshold=threshold, temperature=temperature,
                      metrics={"val_video_auc": 0.5}, training={"data": "untrained test model"})


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory):
    """A models folder with one untrained tiny model per backbone family."""
    folder = tmp_path_factory.mktemp("models")
    for seed, backbone in enumerate(TINY_CUTS):
        make_tiny_model(folder, backbone, seed=seed)
    return folder


@pytest.fixture(scope="session")
def always_fake_dir(tmp_path_factory):
    """A models folder with a tiny ResNet50 that gives every face P(fake) 0.9: a verdict known in
    advance (FAKE) and red boxes that are easy to find in an annotated frame."""
    folder = tmp_path_factory.mktemp("always_fake")
    make_tiny_model(folder, "resnet50", constant_output=0.9)
    return folder


@pytest.fixture(scope="session")
def always_fake_models(always_fake_dir):
    """The always-FAKE model, loaded."""
    from core.models.zoo import load_models

    return load_models("all", always_fake_dir)


@pytest.fixture(scope="session")
def detector():
    """The face detector with the default settings, compiled once for every test that uses it."""
    from core.pipeline import make_detector
    from core.settings import AnalysisSettings

    return make_detector(AnalysisSettings())


@pytest.fixture(scope="session")
def tiny_resnet_dir(tmp_path_factory):
    """A models folder with a single tiny ResNet50 model: the fastest real classifier."""
    folder = tmp_path_factory.mktemp("one_model")
    make_tiny_model(folder, "resnet50")
    return folder
