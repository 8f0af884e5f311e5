"""Measuring verdicts against labels: labelled sets (a CSV or a DFDC folder) analysed and scored
per model, pooled and per dataset (`evaluate`), the measures themselves (`metrics`: AUC, log
loss, ECE, real clips called FAKE and fakes called REAL, bootstrap intervals), and the one folder
a browser may name server files under (`data_root`).

Imports from core: `errors`, `settings`, `results` and `verdicts`. The zoo (core.models) records
an evaluation in the model cards; robustness, training and the CLI evaluate."""
