"""Deepfake video detector core: plain Python, no Streamlit. See docs/ARCHITECTURE.md.

From the bottom up: `errors`, `atomic`, `threads`; `litert_runtime` (networks run on LiteRT); `media` (video and photo in, the annotated copy
out), `faces` (MTCNN, tracking) and `verdicts` (calibration, rules, views, the ensemble);
`settings` and `results`; `evaluation` (labelled sets and their measures); `models` (backbones,
model files, the zoo, Grad-CAM); `pipeline` and `live`; `scan`; `robustness` and `training`;
`cli`. Each imports only what is below it (tests/test_layout.py)."""
import os

# TensorFlow's C++ start-up chatter (CUDA probes on a CPU machine) is noise for CLI users.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
