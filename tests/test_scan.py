"""Batch scans on both engines: the Ray engine writes what the local one writes, resumes after
an interruption with only the rest, and loses no video when a worker process is killed."""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from core.scan.jobs import Outcome, ScanJob, ScannedResult, completed, plan, summary_row
from core.scan.scanner import ScannerConfig
from core.settings import AnalysisSettings
from tests import fixtures

ray = pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parent.parent
FRAMES = "6"


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Six face clips that score differently (sizes, face sizes, lengths) and one bad file."""
    folder = tmp_path_factory.mktemp("archive")
    shapes = [((640, 360), 150, 24), ((480, 360), 140, 30), ((640, 480), 180, 24),
              ((320, 240), 100, 36), ((640, 360), 120, 28), ((800, 450), 200, 24)]
    for number, (size, face_size, frames) in enumerate(shapes):
        sub = folder / ("day1" if number < 3 else "day2")
        sub.mkdir(exist_ok=True)
        fixtures.make_face_clip(sub / f"clip{number}.mp4", size=size, face_size=face_size,
                                frames=frames)
    fixtures.make_text_file(folder / "day2" / "notes.mp4")
    return folder


def _cli(*args, **popen):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "core", *map(str, args)]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


def _run(*args, timeout=600):
    process = _cli(*args)
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def _without_timings(report: dict) -> dict:
    report = json.loads(json.dumps(report))
    report.pop("timings")
    for verdict in [report["verdict"], *report["verdicts"].values()]:
        verdict.pop("seconds")
    return report


def _summary_without_seconds(folder: Path) -> list[dict]:
    with (folder / "summary.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row.pop("seconds")
    return rows


@pytest.fixture(scope="module")
def local_scan(clips, tiny_resnet_dir, tmp_path_factory):
    """The local engine's reports, with one TensorFlow thread as each Ray worker has."""
    out = tmp_path_factory.mktemp("local_out")
    code, _, err = _run("analyze", clips, "--models-dir", tiny_resnet_dir, "--frames", FRAMES,
                        "--threads", "1", "--out", out)
    assert code == 2, err            # the bad file fails alone
    return out


@pytest.mark.slow
def test_ray_engine_writes_the_local_engines_reports(clips, tiny_resnet_dir, local_scan, tmp_path):
    out = tmp_path / "ray_out"
    code, stdout, err = _run("analyze", clips, "--models-dir", tiny_resnet_dir, "--frames", FRAMES,
                             "--engine", "ray", "--workers", "2", "--out", out)
    assert code == 2, err
    assert "notes.mp4 is not a video file" in err
    local_files = sorted(p.name for p in local_scan.iterdir())
    assert sorted(p.name for p in out.iterdir()) == local_files
    assert len(local_files) == 2 * 6 + 1          # a JSON and a CSV per clip, the summary
    first_boxes = set()
    for json_path in local_scan.glob("*.json"):
        ours = json.loads((out / json_path.name).read_text())
        assert _without_timings(ours) == _without_timings(json.loads(json_path.read_text()))
        assert json_path.stem.endswith(Path(ours["video"]["path"]).stem)   # its own clip
        first_boxes.add(tuple(ours["faces"][0]["box"]))
        csv_name = json_path.with_suffix(".csv").name
        assert (out / csv_name).read_bytes() == (local_scan / csv_name).read_bytes()
    rows = _summary_without_seconds(out)
    assert rows == _summary_without_seconds(local_scan)
    assert [r["verdict"] for r in rows].count("ERROR") == 1
    # The clips really differ, so a report written under the wrong name would show.
    assert len(first_boxes) == 6


@pytest.mark.slow
def test_an_interrupted_ray_scan_resumes_with_only_the_rest(clips, tiny_resnet_dir, local_scan,
                                                            tmp_path):
    out = tmp_path / "out"
    args = ["analyze", clips, "--models-dir", tiny_resnet_dir, "--frames", FRAMES,
            "--engine", "ray", "--workers", "1", "--out", out]
    first = _cli(*args)
    deadline = time.monotonic() + 300
    while len(list(out.glob("*.json"))) < 2 and time.monotonic() < deadline:
        assert first.poll() is None, first.communicate()
        time.sleep(0.2)
    # SIGTERM, as a scheduler stops a job (SIGINT may be ignored when the suite itself runs in
    # the background, and children inherit that).
    first.send_signal(signal.SIGTERM)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 130, err
    assert "the same command resumes with the rest" in err
    done_before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.json")}
    assert 2 <= len(done_before) < 6
    assert not list(out.glob(".*")), "a half-written report was left behind"

    code, stdout, err = _run(*args)
    assert code == 2, err
    assert f"{len(done_before)} already done, kept" in stdout
    # Only the rest was analysed: the first run's reports were not rewritten.
    assert {n: (out / n).stat().st_mtime_ns for n in done_before} == done_before
    analysed = [line for line in stdout.splitlines() if " persons, " in line]
    assert len(analysed) == 6 - len(done_before)
    assert _summary_without_seconds(out) == _summary_without_seconds(local_scan)


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray of 2 CPUs for the engine tests in this process (a short temp path: Ray's
    socket paths must stay under 108 characters)."""
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             _temp_dir=temp, _node_ip_address="127.0.0.1",
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    yield
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)


def _config(models_dir) -> ScannerConfig:
    return ScannerConfig(models="all", models_dir=str(models_dir),
                         settings=AnalysisSettings(frames=int(FRAMES)))


def _face_clips(clips: Path) -> list[Path]:
    return sorted(p for p in clips.rglob("clip*.mp4"))


def _kill_a_busy_worker(engine, outcomes: list):
    """After the first result, SIGKILL a worker process that is mid-video."""
    def on_outcome(outcome):
        outcomes.append(outcome)
        if len(outcomes) == 1:
            os.kill(engine.busy_pids()[0], signal.SIGKILL)
    return on_outcome


@pytest.mark.slow
def test_a_killed_worker_loses_no_video(ray_cluster, clips, tiny_resnet_dir, local_scan):
    from core.scan.ray_engine import RayEngine

    jobs = plan(_face_clips(clips))
    engine = RayEngine(_config(tiny_resnet_dir), workers=2, max_attempts=3)
    outcomes: list[Outcome] = []
    try:
        killed_pids = set(engine.pids.values())
        engine.run(jobs, _kill_a_busy_worker(engine, outcomes))
    finally:
        engine.close()
    assert sorted(o.job.index for o in outcomes) == list(range(len(jobs)))   # each once
    assert not [o.error for o in outcomes if o.failed]
    assert [o.attempts for o in outcomes].count(2) == 1     # the killed video, tried again
    assert killed_pids - set(engine.pids.values())          # a worker really was replaced
    expected = {r["path"]: r for r in _summary_without_seconds(local_scan)}
    for outcome in outcomes:
        row = {k: str(v) for k, v in summary_row(outcome).items() if k != "seconds"}
        local = expected[next(p for p in expected if Path(p).name == Path(outcome.job.path).name)]
        assert row["p_tiny_resnet50"] == local["p_tiny_resnet50"]


@pytest.mark.slow
def test_a_video_whose_worker_keeps_dying_fails_alone_with_the_reason(ray_cluster, clips,
                                                                      tiny_resnet_dir):
    from core.scan.ray_engine import RayEngine

    jobs = plan(_face_clips(clips))
    engine = RayEngine(_config(tiny_resnet_dir), workers=2, max_attempts=1)
    outcomes: list[Outcome] = []
    try:
        engine.run(jobs, _kill_a_busy_worker(engine, outcomes))
    finally:
        engine.close()
    assert sorted(o.job.index for o in outcomes) == list(range(len(jobs)))
    failed = [o for o in outcomes if o.failed]
    assert len(failed) == 1
    assert "its worker died on each of 1 tries" in failed[0].error
    assert summary_row(failed[0])["verdict"] == "ERROR"
    with pytest.raises(Exception, match="worker died"):
        ScannedResult.of(failed[0])


@pytest.mark.slow
def test_evaluate_on_ray_gives_the_local_metrics(ray_cluster, clips, tiny_resnet_dir, tmp_path,
                                                 capsys):
    from core.cli import main

    labels = tmp_path / "labels.csv"
    rows = ["path,label"] + [f"{p},{n % 2}" for n, p in enumerate(_face_clips(clips))]
    labels.write_text("\n".join(rows) + "\n")
    reports = {}
    for engine in ("local", "ray"):
        extra = ["--workers", "2"] if engine == "ray" else []
        assert main(["evaluate", str(labels), "--models-dir", str(tiny_resnet_dir), "--frames",
                     FRAMES, "--engine", engine, "--out", str(tmp_path / f"{engine}.json"),
                     *extra]) == 0
        reports[engine] = json.loads((tmp_path / f"{engine}.json").read_text())
    assert [v["path"] for v in reports["ray"]["videos"]] == [v["path"] for v in reports["local"]["videos"]]
    for ours, theirs in zip(reports["ray"]["videos"], reports["local"]["videos"]):
        for name, score in theirs["scores"].items():
            assert ours["scores"][name] == pytest.approx(score, abs=1e-5)   # 1 vs 2 threads
    assert reports["ray"]["models"]["tiny_resnet50"]["auc"] == pytest.approx(
        reports["local"]["models"]["tiny_resnet50"]["auc"])


def test_resume_keeps_only_whole_reports_of_the_same_video(tmp_path):
    job = ScanJob(0, "/videos/a.mp4", "a")
    assert completed(job, tmp_path) is None
    report = {"video": {"path": "/videos/a.mp4"}, "no_face": True, "annotated_video": None}
    (tmp_path / "a.csv").write_text("header\n")
    (tmp_path / "a.json").write_text(json.dumps(report)[:-5])          # cut short
    assert completed(job, tmp_path) is None
    (tmp_path / "a.json").write_text(json.dumps({**report, "video": {"path": "/other/a.mp4"}}))
    assert completed(job, tmp_path) is None                             # another video's report
    (tmp_path / "a.json").write_text(json.dumps(report))
    done = completed(job, tmp_path)
    assert done is not None and done.skipped
    assert completed(job, tmp_path, annotated=True) is None             # its MP4 is missing
    (tmp_path / "a.csv").unlink()
    assert completed(job, tmp_path) is None


def test_plan_keeps_clips_of_the_same_name_apart():
    jobs = plan([Path("dfdc/real/x.mp4"), Path("dfdc/fake/x.mp4"), Path("dfdc/fake/y.mp4")])
    assert [j.stem for j in jobs] == ["real_x", "fake_x", "y"]
    assert [j.index for j in jobs] == [0, 1, 2]


def test_workers_fit_the_cpus_and_the_memory():
    from core.scan.ray_engine import WORKER_MEMORY_BYTES, default_workers

    assert default_workers(16, 64 * WORKER_MEMORY_BYTES) == 16
    assert default_workers(16, 3.5 * WORKER_MEMORY_BYTES) == 3
    assert default_workers(2, 0) == 1


def test_without_ray_the_engine_says_how_to_get_it(monkeypatch):
    from core.scan.ray_engine import RayEngine, ScanEngineError

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ScanEngineError, match="needs Ray"):
        RayEngine(ScannerConfig())


def test_the_app_and_the_local_engine_do_not_import_ray():
    code = ("import sys, app.cache, core.cli, core.scan.run, core.scan.local\n"
            "assert 'ray' not in sys.modules, 'ray imported'\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-2000:]


def test_engine_options_need_the_ray_engine(clips, tiny_resnet_dir, tmp_path, capsys):
    from core.cli import main

    code = main(["analyze", str(clips), "--models-dir", str(tiny_resnet_dir), "--workers", "2",
                 "--out", str(tmp_path / "o")])
    assert code == 2
    assert "are for --engine ray" in capsys.readouterr().err
