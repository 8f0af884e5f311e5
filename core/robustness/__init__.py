"""The robustness benchmark: fixed everyday transforms of a clip (`transforms`: re-encodes,
other codecs, smaller frames, a change of light, a soft lens) and their verdicts against the
untouched clip's (`bench`), the transformed clips cached outside git; the UNCERTAIN band
the evidence chooses, from the same reports (`band`).

Imports from core: `atomic`, `media`, `results`, `verdicts`, `evaluation`, `models`, `pipeline` and
`scan`."""
