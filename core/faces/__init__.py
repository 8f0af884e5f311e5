"""Faces: finding them in a frame with MTCNN and cutting square crops (`detector`), and linking
one clip's detections across its sampled frames into persons (`tracking`).

Imports from core: `litert_runtime` (the networks run on LiteRT). Numpy and OpenCV are all it
needs until a detector is built, which loads TensorFlow and the mtcnn package's networks;
importing this package loads neither."""
