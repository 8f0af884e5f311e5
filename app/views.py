"""What the pages draw, built from core results as plain Python: plotly figures, the verdict card's
HTML, the gallery's face list, model-agreement and evaluation summaries. No Streamlit here, so it
is tested directly."""
from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
from sklearn.metrics import confusion_matrix, roc_curve

from core.models.model_store import ModelCard
from core.results import ENSEMBLE, NO_FACE, AnalysisResult
from core.settings import AnalysisSettings
from core.verdicts.views import ORIGINAL, VIEW_TEXT, parse_views
from core.verdicts.ensemble import weights_text
from core.verdicts.verdict import label_for

LABEL_COLOURS = {"REAL": "#1b873f", "FAKE": "#c62828", "UNCERTAIN": "#e09b00", NO_FACE: "#6b7280"}
LABEL_TEXT = {"REAL": "REAL", "FAKE": "FAKE", "UNCERTAIN": "UNCERTAIN", NO_FACE: "NO FACE"}
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")


def verdict_card_html(title: str, label: str, probability: float | None, *, persons: int | None = None,
                      faces: int | None = None, seconds: float | None = None) -> str:
    """A coloured card: green REAL, red FAKE, amber UNCERTAIN, grey when no face was found."""
    colour = LABEL_COLOURS.get(label, LABEL_COLOURS[NO_FACE])
    lines = []
    if probability is not None:
        lines.append(f"P(fake) {probability:.2f}")
    if persons is not None:
        lines.append(f"{persons} person{'s' if persons != 1 else ''}")
    if faces is not None:
        lines.append(f"{faces} face{'s' if faces != 1 else ''}")
    if seconds is not None:
        lines.append(f"{seconds:.1f} s")
    details = " · ".join(lines)
    return (
        f'<div style="border-left:0.6rem solid {colour};background:{colour}1f;border-radius:0.5rem;'
        f'padding:0.8rem 1rem;margin-bottom:0.8rem">'
        f'<div style="font-size:0.85rem;opacity:0.8">{html.escape(title)}</div>'
        f'<div style="font-size:1.9rem;font-weight:700;color:{colour}">{LABEL_TEXT.get(label, label)}</div>'
        f'<div style="font-size:0.95rem">{html.escape(details)}</div></div>'
    )


def _threshold_and_band(figure: go.Figure, band: float) -> None:
    if band > 0:
        figure.add_hrect(y0=0.5 - band, y1=0.5 + band, fillcolor=LABEL_COLOURS["UNCERTAIN"],
                         opacity=0.15, line_width=0, annotation_text="uncertain",
                         annotation_position="top left")
    figure.add_hline(y=0.5, line_dash="dash", line_color="#444", annotation_text="threshold",
                     annotation_position="bottom right")


def timeline_figure(result: AnalysisResult, models: Sequence[str] | None = None,
                    height: int = 340) -> go.Figure:
    """P(fake) per person over the clip, one line per person (and per model when several are
    given). Each point carries (frame_index, person_id) as customdata for click handling."""
    models = list(models or [result.primary])
    figure = go.Figure()
    by_person: dict[int, list] = {}
    for face in result.faces:
        by_person.setdefault(face.person_id, []).append(face)
    trace_number = 0
    for model in models:
        for person_id, faces in sorted(by_person.items()):
            faces = sorted(faces, key=lambda f: f.time)
            name = f"person {person_id}" if len(models) == 1 else f"{model} · person {person_id}"
            figure.add_trace(go.Scatter(
                x=[f.time for f in faces], y=[f.scores[model] for f in faces],
                customdata=[[f.frame_index, f.person_id] for f in faces],
                mode="lines+markers", name=name,
                line={"color": _PALETTE[trace_number % len(_PALETTE)],
                      "width": 3 if model == ENSEMBLE else 2,
                      "dash": "solid" if model in (ENSEMBLE, result.primary) else "dot"},
                hovertemplate="t=%{x:.2f}s  P(fake)=%{y:.2f}<br>frame %{customdata[0]}<extra>"
                              + html.escape(name) + "</extra>"))
            trace_number += 1
    _threshold_and_band(figure, result.settings.band)
    figure.update_layout(
        height=height, margin={"l": 10, "r": 10, "t": 30, "b": 10},
        xaxis={"title": "time (s)", "range": [0, max(result.video.duration, 1e-3)]},
        yaxis={"title": "P(fake), calibrated", "range": [-0.02, 1.02]},
        legend={"orientation": "h", "y": -0.25}, clickmode="event+select")
    return figure


def face_scores_figure(result: AnalysisResult, models: Sequence[str] | None = None,
                       height: int = 340) -> go.Figure:
    """A photo's faces: P(fake) of each person, one bar per model, against the threshold and
    the UNCERTAIN band (a photo has no time axis for `timeline_figure`)."""
    models = list(models or [result.primary])
    persons = sorted(result.persons, key=lambda p: p.id)
    figure = go.Figure()
    for number, model in enumerate(models):
        figure.add_trace(go.Bar(
            x=[f"person {p.id}" for p in persons], y=[p.scores[model] for p in persons],
            name=model, marker_color=_PALETTE[number % len(_PALETTE)],
            width=min(0.8 / len(models), 0.25),       # one person's lone bar is not a wall
            hovertemplate="%{x}  P(fake)=%{y:.2f}<extra>" + html.escape(model) + "</extra>"))
    _threshold_and_band(figure, result.settings.band)
    figure.update_layout(
        height=height, margin={"l": 10, "r": 10, "t": 30, "b": 10}, barmode="group",
        yaxis={"title": "P(fake), calibrated", "range": [0, 1.02]},
        legend={"orientation": "h", "y": -0.25})
    return figure


def photo_width(width: int, height: int, max_width: int = 760, max_height: int = 600) -> int:
    """Pixels to show a photo at: whole on a laptop screen, never enlarged."""
    return max(1, int(min(width, max_width, width * max_height / max(height, 1))))


def scores_figure(result: AnalysisResult, models: Sequence[str] | None = None,
                  height: int = 340) -> go.Figure:
    """The scores over time for a video, per person for a photo."""
    if result.kind == "image":
        return face_scores_figure(result, models, height)
    return timeline_figure(result, models, height)


def clicked_frame(chart_event) -> int | None:
    """The frame_index of the first point selected on a timeline_figure chart (st.plotly_chart's
    on_select state), or None."""
    selection = (chart_event or {}).get("selection") or {}
    for point in selection.get("points") or []:
        customdata = point.get("customdata")
        if customdata:
            return int(customdata[0])
    return None


@dataclass(frozen=True)
class GalleryFace:
    frame_index: int
    person_id: int
    time: float
    score: float
    label: str


SORT_ORDERS = ("fakest first", "most real first", "by time")


def gallery_faces(result: AnalysisResult, model: str | None = None, *,
                  persons: Iterable[int] | None = None, labels: Iterable[str] | None = None,
                  order: str = "fakest first") -> list[GalleryFace]:
    """The faces to show, filtered by person and label and sorted; scores of `model`
    (the result's primary model by default)."""
    model = model or result.primary
    if order not in SORT_ORDERS:
        raise ValueError(f"unknown order {order!r}; choose one of {', '.join(SORT_ORDERS)}")
    wanted_persons = set(persons) if persons is not None else None
    wanted_labels = set(labels) if labels is not None else None
    faces = []
    for face in result.faces:
        score = face.scores[model]
        label = label_for(score, result.settings.band)
        if wanted_persons is not None and face.person_id not in wanted_persons:
            continue
        if wanted_labels is not None and label not in wanted_labels:
            continue
        faces.append(GalleryFace(face.frame_index, face.person_id, face.time, score, label))
    if order == "by time":
        faces.sort(key=lambda f: (f.time, f.person_id))
    else:
        faces.sort(key=lambda f: (f.score, -f.time), reverse=order == "fakest first")
    return faces


def agreement_matrix(result: AnalysisResult, models: Sequence[str] | None = None
                     ) -> tuple[list[str], np.ndarray]:
    """Fraction of faces on which each pair of models gives the same label (REAL / FAKE /
    UNCERTAIN at the analysis' band); NaN without faces."""
    names = list(models or [*result.models, ENSEMBLE])
    size = len(names)
    if not result.faces:
        return names, np.full((size, size), np.nan)
    band = result.settings.band
    labels = np.array([[label_for(face.scores[name], band) for face in result.faces] for name in names])
    matrix = np.array([[float(np.mean(labels[i] == labels[j])) for j in range(size)] for i in range(size)])
    return names, matrix


def agreement_figure(names: Sequence[str], matrix: np.ndarray) -> go.Figure:
    text = [["" if math.isnan(v) else f"{v:.0%}" for v in row] for row in matrix]
    figure = go.Figure(go.Heatmap(
        z=matrix, x=list(names), y=list(names), zmin=0, zmax=1, colorscale="Blues",
        text=text, texttemplate="%{text}", hovertemplate="%{y} vs %{x}: %{z:.0%}<extra></extra>",
        colorbar={"title": "same label"}))
    figure.update_layout(height=120 + 45 * len(names), margin={"l": 10, "r": 10, "t": 30, "b": 10},
                         yaxis={"autorange": "reversed"})
    return figure


def seconds_figure(result: AnalysisResult) -> go.Figure:
    names = list(result.models)
    figure = go.Figure(go.Bar(x=names, y=[result.verdicts[n].seconds for n in names],
                              marker_color=_PALETTE[0], text=[f"{result.verdicts[n].seconds:.2f} s"
                                                              for n in names]))
    figure.update_layout(height=300, margin={"l": 10, "r": 10, "t": 30, "b": 10},
                         yaxis={"title": "classifier time (s)"})
    return figure


def card_rows(cards: Iterable[ModelCard]) -> list[dict]:
    """One table row per model card: what a person compares models by."""
    rows = []
    for card in cards:
        metrics = {f"{k}": (round(v, 4) if isinstance(v, float) else v)
                   for k, v in (card.metrics or {}).items() if not isinstance(v, (dict, list))}
        rows.append({
            "name": card.name, "backbone": card.backbone, "depth": card.depth,
            "input": card.input_size, "params": card.params,
            "size (MB)": round(card.size_bytes / 1e6, 2), "threshold": round(card.threshold, 4),
            "temperature": round(card.temperature, 3), **metrics,
            "created": card.created, "sha256": card.sha256[:12],
        })
    return rows


def dataset_rows(cards: Iterable[ModelCard], ensemble_card=None) -> list[dict]:
    """Per model (and the fitted ensemble) and validation dataset, what `models record-eval`
    measured: a pooled AUC hides a source the models fail on."""
    from core.models.zoo import DATASETS_KEY

    sources = [(card.name, card.metrics or {}) for card in cards]
    if ensemble_card is not None:
        sources.append(("ensemble (default)", ensemble_card.metrics or {}))
    rows = []
    for name, metrics in sources:
        for dataset, m in (metrics.get(DATASETS_KEY) or {}).items():
            rows.append({"model": name, "dataset": dataset, "clips": m.get("videos"),
                         "AUC": None if m.get("auc") is None else round(m["auc"], 3),
                         "log loss": None if m.get("log_loss") is None else round(m["log_loss"], 3),
                         "real called FAKE": f"{m.get('real_called_fake')}/{m.get('real_videos')}",
                         "fake called REAL": f"{m.get('fake_called_real')}/{m.get('fake_videos')}"})
    return rows


def evaluation_rows(report: dict) -> list[dict]:
    """An evaluation report as table rows: per model, pooled then per dataset."""
    from core.evaluation.metrics import clean, count_text

    def row(name: str, dataset: str, m: dict) -> dict:
        interval = m.get("auc_ci95")
        return clean({"model": name, "dataset": dataset, "clips": m["videos"],
                      "AUC": m["auc"],
                      "AUC 95% interval": (f"[{interval[0]:.2f}, {interval[1]:.2f}]"
                                           if interval else "n/a"),
                      "log loss": m["log_loss"], "ECE": m["ece"],
                      "real called FAKE": count_text(m, "real_called_fake"),
                      "fake called REAL": count_text(m, "fake_called_real"),
                      "decided": m["decided_share"], "accuracy when decided": m["decided_accuracy"]})

    rows = [row(name, "all", m) for name, m in report["models"].items()]
    for dataset, per_model in report.get("datasets", {}).items():
        rows += [row(name, dataset, m) for name, m in per_model.items()]
    return rows


STAGE_TEXT = {"load": "Loading the face detector and the models",
              "detect": "Finding faces",
              "classify": "Scoring the faces with each model",
              "annotate": "Drawing the annotated copy"}


def settings_text(settings: AnalysisSettings) -> str:
    """The sidebar's one line for the analysis settings behind its popover."""
    views = parse_views(settings.views)
    by = "by every model" if settings.views_on == "all" else "by the verdict's models"
    if views and settings.views_per_face == "one":
        seen = (f"each face seen one way in turn ("
                f"{' / '.join(VIEW_TEXT[v] for v in (ORIGINAL, *views))}) {by}")
    else:
        seen = (f"faces also scored as {' and '.join(VIEW_TEXT[v] for v in views)} {by}"
                if views else "faces scored only as found")
    return (f"{settings.frames} frames, {settings.rule.replace('_', ' ')} rule, UNCERTAIN "
            f"within {settings.band:.2f} of 0.5; {seen}.")


def queue_text(place: int) -> str:
    return (f"Waiting for the analyser: number {place} in line. Other uploads are being "
            "analysed; yours starts as soon as one finishes.")


def verdict_title(result: AnalysisResult) -> str:
    if result.primary != ENSEMBLE:
        return f"Verdict ({result.primary})"
    weights = result.ensemble.get("weights") or {}
    if result.ensemble.get("kind") == "fitted":
        return f"Verdict (fitted ensemble: {weights_text(weights)})"
    return f"Verdict (mean of {len(result.models)} models)"


def ensemble_kind_text(ensemble: dict) -> str:
    return "fitted weights" if ensemble.get("kind") == "fitted" else "mean of the models"


def ensemble_text(ensemble: dict) -> str:
    """Which models count in the ensemble's verdict, and how much."""
    weights = ensemble.get("weights") or {}
    if ensemble.get("kind") == "fitted":
        return f"**Ensemble: weights fitted on the validation split** ({weights_text(weights)})"
    return f"**Ensemble: plain mean** of {len(weights)} model(s) ({', '.join(weights)})"


def ensemble_card_row(card) -> dict:
    """The fitted ensemble's card as one table row."""
    m = card.metrics
    interval = m.get("val_video_auc_ci95")
    return {
        "name": "ensemble (fitted)", "members": weights_text(card.weights),
        "threshold": round(card.threshold, 4), "temperature": round(card.temperature, 3),
        "rule": card.rule, "val video AUC": round(m.get("val_video_auc", float("nan")), 4),
        "AUC 95% interval": (f"[{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "n/a"),
        "val log loss": round(m.get("val_video_log_loss", float("nan")), 4),
        "decided (outside band)": m.get("val_decided_share"),
        "accuracy when decided": m.get("val_decided_accuracy"),
        "created": card.created,
    }


def evaluation_labels_and_scores(report: dict, model: str) -> tuple[np.ndarray, np.ndarray]:
    videos = report["videos"]
    return (np.array([v["label"] for v in videos], dtype=int),
            np.array([v["scores"][model] for v in videos], dtype=float))


def roc_figure(report: dict) -> go.Figure:
    """ROC curve per model of an evaluation report (core.evaluation.evaluate.evaluate's schema)."""
    figure = go.Figure()
    figure.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance",
                                line={"dash": "dash", "color": "#999"}))
    for number, (name, metrics) in enumerate(report["models"].items()):
        labels, scores = evaluation_labels_and_scores(report, name)
        if len(set(labels.tolist())) < 2:
            continue
        fpr, tpr, _ = roc_curve(labels, scores)
        auc = metrics.get("auc")
        auc_text = "n/a" if auc is None or (isinstance(auc, float) and math.isnan(auc)) else f"{auc:.3f}"
        figure.add_trace(go.Scatter(x=fpr, y=tpr, mode="lines", name=f"{name} (AUC {auc_text})",
                                    line={"color": _PALETTE[number % len(_PALETTE)],
                                          "width": 3 if name == ENSEMBLE else 2}))
    figure.update_layout(height=420, margin={"l": 10, "r": 10, "t": 30, "b": 10},
                         xaxis={"title": "false positive rate", "range": [0, 1]},
                         yaxis={"title": "true positive rate", "range": [0, 1]})
    return figure


def evaluation_confusion(report: dict, model: str) -> np.ndarray:
    """2 x 2 counts, rows true REAL/FAKE, columns predicted REAL/FAKE at 0.5 (each model's own
    threshold after calibration)."""
    labels, scores = evaluation_labels_and_scores(report, model)
    return confusion_matrix(labels, (scores >= 0.5).astype(int), labels=[0, 1])


def confusion_figure(model: str, counts: np.ndarray) -> go.Figure:
    figure = go.Figure(go.Heatmap(
        z=counts, x=["predicted REAL", "predicted FAKE"], y=["REAL", "FAKE"], colorscale="Blues",
        text=counts, texttemplate="%{text}", showscale=False))
    figure.update_layout(title=model, height=260, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                         yaxis={"autorange": "reversed"})
    return figure
