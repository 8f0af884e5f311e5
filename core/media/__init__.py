"""Media in and out: reading videos with PyAV (`video`: probing, even sampling, every frame,
rotation) and photos with Pillow (`image`: upright by EXIF, size checked from the header), and
writing the annotated copy (`annotate`: face boxes drawn, H.264 MP4 or JPEG).

Imports from core: `errors` and `atomic` only. Nothing here knows of faces, models or verdicts."""
