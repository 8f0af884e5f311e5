"""The models and their files: the backbones a classifier is built on (`backbones`, with
`efficientnet_lite` and its PyTorch weights read by `torch_checkpoint`; `backbone_names`, the
names alone, for pages that must not import Keras), the model contract of a `.keras` file and its
JSON card (`model_store`: sha256, the batched, locked `Classifier`, run on LiteRT), origin-project `.h5` files
turned into that format (`h5_import`), the zoo folder (`zoo`: the repository's `models/` by
default; listing, choosing and loading, recording evaluations in the cards) and Grad-CAM heatmaps
(`gradcam`).

Imports from core: `errors`, `atomic`, `litert_runtime` (a loaded model's forward pass run on
LiteRT), `settings`, `verdicts` and `evaluation` (the zoo's evaluation records). Keras and TensorFlow are imported by the modules that build or load a
model, never by this package's `__init__`: a page may import `backbone_names` or
`gradcam.overlay` without them."""
