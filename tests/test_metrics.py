"""Video-level verdict measures (core.evaluation.metrics) and the evaluation report built on them
(core.evaluation.evaluate): every number here is worked out by hand."""
from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from core.errors import CorruptVideoError
from core.evaluation import metrics as metrics_module
from core.evaluation.evaluate import LabelledVideo, evaluate, format_report, schema_only, summarise
from core.evaluation.metrics import clean, count_text, expected_calibration_error, verdict_metrics
from core.results import ENSEMBLE, ModelVerdict
from core.verdicts.verdict import label_for

# Band 0.1: FAKE at P >= 0.6, REAL below 0.4, UNCERTAIN between.
LABELS = [0, 0, 0, 1, 1, 1]
PROBS = [0.65, 0.55, 0.35, 0.35, 0.65, 0.9]
#        FAKE  UNC   REAL  REAL  FAKE  FAKE


@pytest.fixture
def few_resamples(monkeypatch):
    """Fewer bootstrap resamples: the same code path, a tenth of the time."""
    monkeypatch.setattr(metrics_module, "BOOTSTRAP_RESAMPLES", 200)


def test_counts_and_shares_at_the_band():
    m = verdict_metrics(LABELS, PROBS, 0.1, intervals=False)
    assert m["videos"] == 6 and m["real_videos"] == 3 and m["fake_videos"] == 3
    assert m["band"] == 0.1
    assert m["real_called_fake"] == 1                  # the real clip at 0.65
    assert m["real_called_fake_share"] == pytest.approx(1 / 3)
    assert m["fake_called_real"] == 1                  # the fake clip at 0.35
    assert m["fake_called_real_share"] == pytest.approx(1 / 3)
    assert m["decided_share"] == pytest.approx(5 / 6)  # all but the 0.55
    assert m["decided_accuracy"] == pytest.approx(3 / 5)
    # At 0.5: called fake [T, T, F, F, T, T] against [F, F, F, T, T, T]: 3 of 6 right.
    assert m["accuracy"] == pytest.approx(0.5)
    # Fake above real over the 9 pairs, ties half: 0.5 + 2.5 + 3 = 6.
    assert m["auc"] == pytest.approx(6 / 9)
    expected_loss = -(math.log(0.35) + math.log(0.45) + math.log(0.65)
                      + math.log(0.35) + math.log(0.65) + math.log(0.9)) / 6
    assert m["log_loss"] == pytest.approx(expected_loss)
    # Bins 3 (|0.5 - 0.35| x 2), 5 (0.55), 6 (|0.5 - 0.65| x 2), 9 (0.1): 1.25 / 6.
    assert m["ece"] == pytest.approx(1.25 / 6)
    assert "auc_ci95" not in m and "real_called_fake_share_ci95" not in m
    assert count_text(m, "real_called_fake") == "1/3"
    assert count_text(m, "fake_called_real") == "1/3"


def test_a_wider_band_decides_fewer():
    m = verdict_metrics(LABELS, PROBS, 0.2, intervals=False)
    # FAKE at >= 0.7, REAL below 0.3: only the fake at 0.9 is decided, and rightly.
    assert m["real_called_fake"] == 0 and m["fake_called_real"] == 0
    assert m["decided_share"] == pytest.approx(1 / 6)
    assert m["decided_accuracy"] == pytest.approx(1.0)


@pytest.mark.parametrize("p", [0.0, 0.3, 0.39, 0.4, 0.45, 0.5, 0.55, 0.59, 0.6, 0.61, 0.8, 1.0])
def test_calls_from_probability_agree_with_label_for(p):
    label = label_for(p, 0.1)
    as_real = verdict_metrics([0], [p], 0.1, intervals=False)
    as_fake = verdict_metrics([1], [p], 0.1, intervals=False)
    assert as_real["real_called_fake"] == int(label == "FAKE")
    assert as_fake["fake_called_real"] == int(label == "REAL")
    assert as_real["decided_share"] == float(label != "UNCERTAIN")


def test_calls_override_the_probability():
    labels = [0, 0, 0, 1, 1]
    probs = [0.9, 0.9, 0.1, 0.1, 0.1]
    # An UNCERTAIN (with reasons) at P 0.9 is no accusation; NO_FACE is neither; a FAKE call
    # counts as FAKE whatever P says.
    calls = ["UNCERTAIN", "NO_FACE", "FAKE", "REAL", "UNCERTAIN"]
    m = verdict_metrics(labels, probs, 0.1, calls=calls, intervals=False)
    assert m["real_called_fake"] == 1                  # only the real clip called FAKE at P 0.1
    assert m["real_called_fake_share"] == pytest.approx(1 / 3)
    assert m["fake_called_real"] == 1
    assert m["fake_called_real_share"] == pytest.approx(1 / 2)
    assert m["decided_share"] == pytest.approx(2 / 5)
    assert m["decided_accuracy"] == pytest.approx(0.0)
    # The measures of P itself still use P: at 0.5 only the real clip at 0.1 is right.
    assert m["accuracy"] == pytest.approx(1 / 5)
    without = verdict_metrics(labels, probs, 0.1, intervals=False)
    assert without["real_called_fake"] == 2 and without["fake_called_real"] == 2


def test_nothing_decided_gives_nan_decided_accuracy():
    m = verdict_metrics([0, 1], [0.5, 0.5], 0.1, calls=["NO_FACE", "UNCERTAIN"], intervals=False)
    assert m["decided_share"] == 0.0
    assert math.isnan(m["decided_accuracy"])
    assert m["real_called_fake"] == 0 and m["fake_called_real"] == 0


def test_ece_two_bins_by_hand():
    labels = [0, 1, 0, 1, 1]
    probs = [0.15, 0.15, 0.85, 0.85, 0.85]
    # Bin 1: 2 clips, |0.5 - 0.15| = 0.35; bin 8: 3 clips, |2/3 - 0.85| = 0.18333.
    expected = (2 * 0.35 + 3 * abs(2 / 3 - 0.85)) / 5
    assert expected_calibration_error(labels, probs) == pytest.approx(expected)
    assert expected_calibration_error(labels, probs) == pytest.approx(0.25)
    # Perfectly calibrated within each bin.
    assert expected_calibration_error([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == pytest.approx(0.0)
    # P = 1 falls in the last bin with 0.95, not past it: |0.5 - 0.975|.
    assert expected_calibration_error([1, 0], [1.0, 0.95]) == pytest.approx(0.475)
    # Two bins only: everything below 0.5 in the first.
    assert expected_calibration_error(labels, probs, bins=2) == pytest.approx(expected)
    assert math.isnan(expected_calibration_error([], []))


def test_missing_class_gives_nan_and_clean_gives_none():
    m = verdict_metrics([1, 1, 1], [0.2, 0.7, 0.9], 0.1)
    assert m["real_videos"] == 0 and m["fake_videos"] == 3
    assert m["real_called_fake"] == 0
    assert math.isnan(m["real_called_fake_share"])
    assert math.isnan(m["auc"])
    assert m["fake_called_real"] == 1
    assert m["fake_called_real_share"] == pytest.approx(1 / 3)
    assert m["auc_ci95"] is None
    assert m["real_called_fake_share_ci95"] is None
    low, high = m["fake_called_real_share_ci95"]
    assert 0.0 <= low <= 1 / 3 <= high <= 1.0

    cleaned = clean(m)
    assert cleaned["real_called_fake_share"] is None
    assert cleaned["auc"] is None
    assert cleaned["fake_called_real_share"] == pytest.approx(1 / 3)
    json.dumps(cleaned, allow_nan=False)
    assert clean({"a": [float("nan"), 1.0, {"b": float("nan")}], "c": "x", "d": 2}) == \
        {"a": [None, 1.0, {"b": None}], "c": "x", "d": 2}


def test_bootstrap_intervals_contain_the_point_and_repeat_for_a_seed(few_resamples):
    labels = [0] * 8 + [1] * 8
    probs = [0.05, 0.1, 0.2, 0.3, 0.35, 0.45, 0.62, 0.7,
             0.3, 0.5, 0.55, 0.65, 0.7, 0.8, 0.9, 0.95]
    m = verdict_metrics(labels, probs, 0.1)
    for key in ("auc", "real_called_fake_share", "fake_called_real_share"):
        low, high = m[f"{key}_ci95"]
        assert 0.0 <= low <= m[key] <= high <= 1.0, key
    assert m["real_called_fake_share"] == pytest.approx(2 / 8)
    assert m["fake_called_real_share"] == pytest.approx(1 / 8)
    # Resampling within a class: a share's interval is not degenerate here.
    assert m["real_called_fake_share_ci95"][0] < m["real_called_fake_share_ci95"][1]
    again = verdict_metrics(labels, probs, 0.1)
    assert again == m
    other = verdict_metrics(labels, probs, 0.1, seed=1)
    assert other["auc"] == m["auc"]
    assert other["auc_ci95"] != m["auc_ci95"]


def _rows():
    """Six clips over two datasets, one model "m" and the ensemble."""
    probs = {"m": [0.65, 0.55, 0.35, 0.35, 0.65, 0.9],
             ENSEMBLE: [0.2, 0.2, 0.2, 0.8, 0.8, 0.8]}
    datasets = ["ff", "ff", "dfdc", "ff", "dfdc", "dfdc"]
    return [{"path": f"v{i}.mp4", "label": LABELS[i],
             "scores": {n: probs[n][i] for n in probs},
             "calls": {n: label_for(probs[n][i], 0.1) for n in probs},
             "dataset": datasets[i]} for i in range(6)]


def test_summarise_pools_and_splits_by_dataset(few_resamples):
    summary = summarise(_rows(), ["m", ENSEMBLE], 0.1)
    assert set(summary) == {"models", "datasets"}
    assert list(summary["models"]) == ["m", ENSEMBLE]
    pooled = summary["models"]["m"]
    assert pooled["real_called_fake"] == 1 and pooled["fake_called_real"] == 1
    assert summary["models"][ENSEMBLE]["auc"] == pytest.approx(1.0)
    assert list(summary["datasets"]) == ["dfdc", "ff"]       # sorted
    ff, dfdc = summary["datasets"]["ff"]["m"], summary["datasets"]["dfdc"]["m"]
    # ff: reals 0.65 (FAKE) and 0.55 (UNCERTAIN), fake 0.35 (REAL).
    assert (ff["videos"], ff["real_videos"], ff["fake_videos"]) == (3, 2, 1)
    assert (ff["real_called_fake"], ff["fake_called_real"]) == (1, 1)
    assert ff["fake_called_real_share"] == pytest.approx(1.0)
    # dfdc: real 0.35 (REAL), fakes 0.65 and 0.9 (FAKE).
    assert (dfdc["videos"], dfdc["real_videos"], dfdc["fake_videos"]) == (3, 1, 2)
    assert (dfdc["real_called_fake"], dfdc["fake_called_real"]) == (0, 0)
    assert dfdc["decided_accuracy"] == pytest.approx(1.0)


def test_summarise_uses_calls_when_every_row_has_them(few_resamples):
    rows = _rows()
    rows[0]["calls"]["m"] = "UNCERTAIN"          # the real clip at 0.65, held back by a reason
    assert summarise(rows, ["m"], 0.1)["models"]["m"]["real_called_fake"] == 0
    del rows[1]["calls"]                          # not every row has calls: P decides
    assert summarise(rows, ["m"], 0.1)["models"]["m"]["real_called_fake"] == 1


def test_summarise_no_datasets_for_one_or_none(few_resamples):
    rows = _rows()
    for row in rows:
        row["dataset"] = "ff"
    assert summarise(rows, ["m"], 0.1)["datasets"] == {}
    for row in rows:
        del row["dataset"]
    summary = summarise(rows, ["m"], 0.1)
    assert summary["datasets"] == {}
    assert summary["models"]["m"]["real_called_fake"] == 1


def _report(rows, names, seconds=1.25):
    report = {"videos": rows, "band": 0.1, "seconds": seconds, **summarise(rows, names, 0.1)}
    for m in report["models"].values():
        m["no_face"] = 0
    return report


def test_format_report_prints_counts(few_resamples):
    text = format_report(_report(_rows(), ["m", ENSEMBLE]))
    lines = text.splitlines()
    assert "real→FAKE" in lines[0] and "fake→REAL" in lines[0]
    m_line = next(line for line in lines if line.startswith("m "))
    fields = m_line.split()
    # name, AUC, [low,, high], logloss, ECE, real→FAKE, fake→REAL, decided, acc_dec
    assert fields[0] == "m" and fields[1] == "0.667"
    assert fields[6] == "1/3" and fields[7] == "1/3"
    assert fields[8] == "0.833" and fields[9] == "0.600"
    assert "-- dfdc only" in lines and "-- ff only" in lines
    ff_block = lines[lines.index("-- ff only") + 1:]
    ff_m = ff_block[0].split()
    assert ff_m[0] == "m" and ff_m[6] == "1/2" and ff_m[7] == "1/1"
    assert lines[-1] == "6 videos (0 without a face), UNCERTAIN band 0.1, 1.2 s"


def test_format_report_one_class_shows_na(few_resamples):
    rows = [r for r in _rows() if r["label"] == 1]
    for r in rows:
        r.pop("dataset")
    text = format_report(_report(rows, ["m"]))
    fields = text.splitlines()[1].split()
    assert fields[:3] == ["m", "n/a", "n/a"]       # no AUC, no interval with one class
    assert "0/0" in fields and "1/3" in fields
    assert "-- " not in text


def test_schema_only_is_strict_json(few_resamples):
    rows = _rows()
    rows[3]["dataset"] = "dfdc"                     # ff now has no fake clip
    rows[2]["dataset"] = "ff"
    report = _report(rows, ["m"])
    report["extra"] = {"not": "written"}
    assert math.isnan(report["datasets"]["ff"]["m"]["fake_called_real_share"])
    written = schema_only(report)
    assert list(written) == ["models", "datasets", "videos", "band", "seconds"]
    text = json.dumps(written, allow_nan=False)
    back = json.loads(text)
    assert back["datasets"]["ff"]["m"]["fake_called_real_share"] is None
    assert back["datasets"]["ff"]["m"]["auc"] is None
    assert back["datasets"]["ff"]["m"]["auc_ci95"] is None
    assert back["models"]["m"]["real_called_fake"] == 1
    assert back["videos"][0]["calls"]["m"] == "FAKE"
    # Without the datasets key (an older report) it still writes.
    del report["datasets"]
    assert "datasets" not in schema_only(report)


def test_evaluate_records_calls_and_datasets(few_resamples):
    videos = [LabelledVideo(Path("a.mp4"), 0, {"dataset": "ff"}),
              LabelledVideo(Path("b.mp4"), 0, {"dataset": "dfdc"}),
              LabelledVideo(Path("c.mp4"), 1, {"dataset": "ff"}),
              LabelledVideo(Path("d.mp4"), 1, {"dataset": "dfdc"}),
              LabelledVideo(Path("e.mp4"), 1, {})]
    # A real clip at 0.9 held UNCERTAIN by a reason, a plain FAKE call, a REAL miss, a broken file,
    # and a clip without a face.
    given = {"a.mp4": (0.9, "UNCERTAIN"), "b.mp4": (0.7, "FAKE"), "c.mp4": (0.2, "REAL")}

    def analyze(path):
        if path.name == "d.mp4":
            raise CorruptVideoError("broken")
        if path.name == "e.mp4":
            return SimpleNamespace(no_face=True, verdicts={
                n: ModelVerdict(n, None, "NO_FACE") for n in ("m", ENSEMBLE)})
        p, label = given[path.name]
        return SimpleNamespace(no_face=False, scored_views={"m": ["flip"], ENSEMBLE: []}, verdicts={
            n: ModelVerdict(n, p, label) for n in ("m", ENSEMBLE)})

    report = evaluate(videos, analyze, ["m"], band=0.1)
    assert report["band"] == 0.1
    rows = report["videos"]
    assert [r["calls"]["m"] for r in rows] == ["UNCERTAIN", "FAKE", "REAL", "NO_FACE", "NO_FACE"]
    assert [r["scores"]["m"] for r in rows] == [0.9, 0.7, 0.2, 0.5, 0.5]
    assert [r.get("dataset") for r in rows] == ["ff", "dfdc", "ff", "dfdc", None]
    m = report["models"]["m"]
    assert m["real_called_fake"] == 1 and m["real_called_fake_share"] == pytest.approx(1 / 2)
    assert m["fake_called_real"] == 1 and m["fake_called_real_share"] == pytest.approx(1 / 3)
    assert m["decided_share"] == pytest.approx(2 / 5)
    assert m["no_face"] == 2
    assert set(report["datasets"]) == {"dfdc", "ff"}
    assert report["datasets"]["ff"]["m"]["real_called_fake"] == 0
    assert report["datasets"]["dfdc"]["m"]["real_called_fake"] == 1
    assert set(report["models"]) == {"m", ENSEMBLE}
    # The views each model's faces were also scored as (AnalysisSettings.views_on).
    assert report["views"] == {"m": ["flip"], ENSEMBLE: []}
    assert schema_only(report)["views"] == report["views"]
    json.dumps(schema_only(report), allow_nan=False)
    assert "2 without a face" in format_report(report)
