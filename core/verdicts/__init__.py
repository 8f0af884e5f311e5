"""From a model's scores to a verdict: calibration and the aggregation rules, REAL / FAKE /
UNCERTAIN (`verdict`), fitting a model's threshold and temperature (`calibration`), the other
views of a face crop scored beside it (`views`), and the fitted ensemble and its card
(`ensemble`).

Imports from core: `errors` and `atomic` only; everything else in core may import this."""
