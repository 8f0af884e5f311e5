"""Names the app's pages offer without building a model: the origin project's five backbones
(whose Keras 2 `.h5` files import) and the preprocessing modes. `core.backbones`, which needs
Keras, checks its registry against them when imported."""

ORIGIN_BACKBONES = ("efficientnetb7", "inceptionresnetv2", "inceptionv3", "resnet50", "vgg16")
PREPROCESSING_MODES = ("caffe", "tf", "none", "raw")
