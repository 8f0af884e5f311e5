"""Deepfake video detector core: plain Python, no Streamlit. See docs/ARCHITECTURE.md."""
import os

# TensorFlow's C++ start-up chatter (CUDA probes on a CPU machine) is noise for CLI users.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
