"""Training: face extraction, Self-Blended Images, augmentation, the training loop, distillation
(from a teacher beside the student, or from its P(fake) computed once, `teacher_cache`), the
DFDC crops' framing and crop-level metrics, and their CLI.

Nothing in the app or the analysis core imports this package. Training runs on any Keras 3
backend (TensorFlow, JAX, PyTorch) and does not need PyAV: faces come from the extracted index.

Imports from core: `errors`, `atomic`, `threads`, `settings`, `media`, `faces`, `verdicts`,
`evaluation` and `models`."""
