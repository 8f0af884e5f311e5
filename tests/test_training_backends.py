"""Training off TensorFlow: `python -m core train` under Keras on JAX and on PyTorch in a process where
TensorFlow, PyAV and mtcnn cannot be imported (a machine with a GPU, JAX and PyTorch but neither
of those), and the model it exports scoring the same faces under TensorFlow."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from core.models.model_store import load_classifier
from core.training.extract import read_index
from core.training.train import centre_crop, load_faces
from tests.test_train import faces_dir  # noqa: F401  (the shared extracted-faces fixture)

ROOT = Path(__file__).resolve().parent.parent
BLOCKED = ("tensorflow", "av", "tf_keras", "mtcnn")



@pytest.fixture(scope="module")
def no_tensorflow_path(tmp_path_factory) -> Path:
    """A folder first on the child's path whose stand-ins for the blocked packages fail to import
    as a missing package does. (A meta-path hook cannot do this: torch probes packages with
    importlib.util.find_spec, which must not raise.)"""
    folder = tmp_path_factory.mktemp("no_tensorflow")
    for name in BLOCKED:
        (folder / name).mkdir()
        (folder / name / "__init__.py").write_text(
            f"raise ModuleNotFoundError(\"No module named '{name}' (not on this machine)\", "
            f"name={name!r})\n")
    return folder


def run_without_tensorflow(code: str, blocked_path: Path, backend: str = "torch",
                           timeout: int = 600):
    env = {**os.environ, "KERAS_BACKEND": backend, "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": os.pathsep.join([str(blocked_path), str(ROOT)])}
    return subprocess.run([sys.executable, "-c", "import sys\n" + textwrap.dedent(code)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_the_blocker_really_blocks(no_tensorflow_path):
    done = run_without_tensorflow("import av", no_tensorflow_path)
    assert done.returncode != 0 and "No module named 'av'" in done.stderr


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_training_code_and_the_cli_import_without_tensorflow_or_pyav(no_tensorflow_path, backend):
    done = run_without_tensorflow("""
        import keras
        from core.cli import build_parser
        from core.training import extract, sbi, augment, train
        from core.evaluation.evaluate import video_metrics
        from core.models.backbones import build_classifier
        build_parser().parse_args(["train", "--backbone", "vgg16", "--faces", "x"])
        model = build_classifier("efficientnet_lite0", depth="block2b_add", input_size=64)
        print(keras.backend.backend(), sorted(m for m in {BLOCKED!r} if m in sys.modules))
    """.replace("{BLOCKED!r}", repr(BLOCKED)), no_tensorflow_path, backend)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == f"{backend} []"


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_training_off_tensorflow_exports_a_model_tensorflow_scores_the_same(  # noqa: F811
        faces_dir, tmp_path, no_tensorflow_path, backend):
    out = tmp_path / "models" / "lite_torch.keras"
    scores_file = tmp_path / "torch_scores.json"
    rows = read_index(faces_dir)[:6]
    crops = np.stack([centre_crop(load_faces([row], 64).images[0], 64) for row in rows])
    np.save(tmp_path / "crops.npy", crops)
    done = run_without_tensorflow(f"""
        import json, numpy as np, keras
        from core.cli import main
        code = main(["train", "--backbone", "efficientnet_lite0", "--weights", "imagenet",
                     "--depth", "block2b_add", "--input-size", "64", "--batch", "8",
                     "--epochs", "1", "--lr", "1e-4", "--no-progress", "--augment", "compression",
                     "--faces", {str(faces_dir)!r}, "--out", {str(out)!r},
                     "--run-dir", {str(tmp_path / "run")!r}])
        assert code == 0, code
        model = keras.models.load_model({str(out)!r}, safe_mode=True)
        crops = np.load({str(tmp_path / "crops.npy")!r}).astype("float32")
        scores = np.asarray(model.predict_on_batch(crops)).reshape(-1)
        json.dump({{"backend": keras.backend.backend(), "scores": scores.tolist(),
                   "blocked_loaded": [m for m in {BLOCKED!r} if m in sys.modules]}},
                  open({str(scores_file)!r}, "w"))
    """, no_tensorflow_path, backend)
    assert done.returncode == 0, done.stderr[-3000:]
    under_backend = json.loads(scores_file.read_text())
    assert under_backend["backend"] == backend and under_backend["blocked_loaded"] == []

    card = json.loads(out.with_suffix(".json").read_text())
    assert card["training"]["weights"] == "imagenet"
    assert card["training"]["recipe"]["augmentation"]["preset"] == "compression"
    classifier = load_classifier(out)               # TensorFlow here; sha256 checked, safe_mode
    under_tensorflow = classifier.predict(crops)
    np.testing.assert_allclose(under_tensorflow, under_backend["scores"], atol=1e-4)
    assert np.ptp(under_tensorflow) > 0
