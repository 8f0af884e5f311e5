"""Batch scans of many videos: one plan, two engines.

`jobs` names each video's outputs and knows which reports are already complete (so a rerun
over the same folder resumes), `scanner` analyses one video into its report texts (the same code
in this process and in a Ray actor), `local` runs the scanner here, one video after another, and
`ray_engine` spreads it over the actors of a local Ray or a cluster, retrying the videos of a
worker that dies. Ray is optional: only `ray_engine` imports it.

Imports from core: `errors`, `atomic`, `threads`, `media`, `settings`, `results`, `models` and
`pipeline`."""
