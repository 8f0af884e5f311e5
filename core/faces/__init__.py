"""Faces: finding them in a frame with MTCNN and cutting square crops (`detector`), and linking
one clip's detections across its sampled frames into persons (`tracking`).

Imports from core: nothing (numpy and OpenCV; TensorFlow and the `mtcnn` package only when a
detector is built). Importing this package loads neither."""
