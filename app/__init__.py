"""The Streamlit side of the app, below the entry script (`streamlit_app.py`) and its pages
(`pages/`): `state` (what a browser session keeps, plain Python), `views` (figures, cards and
tables of results, plain Python), `cache` (the one place that caches for the whole server
process: the analysis workers, the zoo's listing, the analysis queue) and `entry` (deep links go
through the entry script once per session).

Imports: `serving` and `core` (never TensorFlow or Keras for an analysis: the workers hold the
models). Only `streamlit_app.py`, `pages/` and tests import this package; `core` and `serving`
never do."""
