"""Analyses outside the web server: the app hands each upload to a worker process that holds the
face detector and the models, on this machine (`local`) or on a Ray cluster (`ray_workers`),
and gets the result back; the server process itself only serves pages.

`protocol` is what travels between them (JSON headers and raw byte blobs, no pickle), `uploads`
the upload and its analysis as the app keeps it, `analyst` the worker's side (the scan's
VideoScanner, loaded once per model selection), `worker` the local worker process's main loop,
and `service` picks the engine from the environment.

Imports: `core` only. Nothing here imports the app (`app`, `pages`, Streamlit); the app imports
this package."""
