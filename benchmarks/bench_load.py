"""Many users at once: real Chromium sessions against one `streamlit run` server.

    .venv/bin/python benchmarks/bench_load.py [--clips A.mp4 B.mp4 ...] [--sessions 4]
        [--modes inline,process] [--models-dir models] [--slots N] [--clients-nice N]
        [--probes 5]

For each mode (DEEPFAKE_ANALYSIS_WORKERS: `inline`, analyses in the server process as before
the app had workers, is the baseline; `process`, the default, a worker process), in the same
run: the Analyze page loaded by a browser while the server is idle, and one session's time to
verdict alone. Then one browser session per clip uploads its clip at the same moment and, while
they are being analysed, newcomers open the Analyze page one after another (`--probes`). Prints
each session's time to verdict and whether the verdict shown is for its own clip, the place in
line each was shown, each newcomer's page-load time (target <= 2 s) and where it went (the HTML,
the scripts, styles and fonts, the websocket connected, the uploader drawn, the script run done),
the CPU the server, its workers and the uploaders' browser took while the newcomers loaded, the
peak RSS of the server and of its worker processes, and any exception in the server log.

`--clips`: real clips (distinct file names), e.g. two 10 s 1080p DFDC clips and two FF++ c23
ones from ../shared/data; without it, `--sessions` generated 640x360 clips.

The uploaders' Chromium stands for browsers on other machines: here it shares the server's two
cores, so it runs at a lower priority (`--clients-nice`, default 19; 0 to count its rendering
as load; both are worth printing).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fixtures import make_face_clip  # noqa: E402
from tests.serving import streamlit_server  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 600_000


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _workers_of(server_pid: int) -> list[int]:
    """The server's worker processes (python -m serving.worker, its children)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if parent == server_pid and b"serving.worker" in command:
            found.append(int(entry.name))
    return found


TICK = os.sysconf("SC_CLK_TCK")


def cpu_by_role(server_pid: int) -> dict[str, float]:
    """CPU seconds used so far by the server, its worker processes and the uploaders' (niced)
    browser, and by the whole machine ("busy": every process; "idle"), from /proc."""
    with open("/proc/stat") as handle:
        ticks = [int(v) for v in handle.readline().split()[1:]]
    used = {"server": 0.0, "workers": 0.0, "uploaders": 0.0,
            "busy": (sum(ticks) - ticks[3] - ticks[4]) / TICK, "idle": (ticks[3] + ticks[4]) / TICK}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        seconds = (int(fields[11]) + int(fields[12])) / TICK
        if int(entry.name) == server_pid:
            used["server"] += seconds
        elif int(fields[1]) == server_pid and b"serving.worker" in command:
            used["workers"] += seconds
        elif b"chromium" in command and int(fields[16]) > 0:
            used["uploaders"] += seconds
    return used


def cpu_text(before: dict, after: dict, seconds: float) -> str:
    """Where the machine's CPU went between two cpu_by_role readings, in core-seconds."""
    spent = {k: after[k] - before[k] for k in after}
    rest = spent["busy"] - spent["server"] - spent["workers"] - spent["uploaders"]
    return (f"{seconds:.1f} s x {os.cpu_count()} cores: server {spent['server']:.1f}, workers "
            f"{spent['workers']:.1f}, uploaders' browser {spent['uploaders']:.1f}, "
            f"the rest (newcomers' browser, this script, anything else) {rest:.1f}, "
            f"idle {spent['idle']:.1f} core-seconds")


class PeakRss:
    """Resident memory of the server process and of its workers, sampled every 100 ms; the
    workers' peak is the largest sum over them at one moment."""

    def __init__(self, pid: int):
        self.pid, self.peak, self.workers_peak = pid, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss(self.pid))
            self.workers_peak = max(self.workers_peak,
                                    sum(_rss(w) for w in _workers_of(self.pid)))
            time.sleep(0.1)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


async def wait_for_app(page) -> None:
    await page.locator("[data-testid='stApp'][data-test-connection-state='CONNECTED']").wait_for(
        state="attached")
    await page.locator("[data-testid='stApp'][data-test-script-state='notRunning']").wait_for(
        state="attached")


async def open_analyze(browser, url: str):
    """A new session on the Analyze page; returns (context, page, seconds until usable, phases):
    the seconds from the start at which the page's HTML arrived, its scripts, styles and fonts
    had arrived, the app's websocket was connected, the uploader was drawn and the script run
    had ended: what a newcomer waits on."""
    context = await browser.new_context(viewport={"width": 1300, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = await context.new_page()
    started = time.perf_counter()
    await page.goto(url)
    await page.locator("[data-testid='stApp'][data-test-connection-state='CONNECTED']").wait_for(
        state="attached")
    connected = time.perf_counter() - started
    await page.locator("[data-testid='stFileUploaderDropzoneInput']").wait_for(state="attached")
    drawn = time.perf_counter() - started
    await wait_for_app(page)
    seconds = time.perf_counter() - started
    loaded = await page.evaluate("""() => {
        const nav = performance.getEntriesByType('navigation')[0];
        const assets = performance.getEntriesByType('resource')
            .filter(r => ['script', 'link', 'css'].includes(r.initiatorType)
                         || /\\.(js|css|woff2?|ttf)(\\?|$)/.test(r.name));
        return {html: nav.responseEnd,
                assets: Math.max(nav.responseEnd, ...assets.map(r => r.responseEnd)),
                bytes: assets.reduce((total, r) => total + (r.encodedBodySize || 0), 0)};
    }""")
    phases = {"html": loaded["html"] / 1000, "assets": loaded["assets"] / 1000,
              "connected": connected, "drawn": drawn, "done": seconds,
              "asset_mb": loaded["bytes"] / 2**20}
    return context, page, seconds, phases


PHASES = ("html", "assets", "connected", "drawn", "done")


def phases_text(phases: dict) -> str:
    return ("  ".join(f"{name} {phases[name]:.2f}" for name in PHASES)
            + f" s ({phases['asset_mb']:.1f} MiB of assets)")


async def analyse(page, clip: Path) -> dict:
    """Upload, then wait for the verdict card; notes the places in line the page showed."""
    places: list[int] = []
    started = time.perf_counter()
    await page.locator("[data-testid='stFileUploaderDropzoneInput']").set_input_files(str(clip))
    title = page.get_by_text(re.compile(r"^Verdict \("))
    while True:
        try:
            await title.first.wait_for(timeout=500)
            break
        except Exception:  # noqa: BLE001 - Playwright's timeout; look at the queue text instead
            text = await page.locator("[data-testid='stProgress']").all_inner_texts()
            for found in re.findall(r"number (\d+) in line", " ".join(text)):
                places.append(int(found))
    seconds = time.perf_counter() - started
    heading = await page.get_by_role(
        "heading", name=re.compile(r"\.(mp4|mov|avi|mkv|webm)$")).first.inner_text()
    card = await title.first.locator("xpath=..").inner_text()
    label = re.search(r"\b(REAL|FAKE|UNCERTAIN|NO FACE)\b", card)
    return {"clip": clip.name, "seconds": seconds, "own_clip": heading.strip() == clip.name,
            "label": label.group(1) if label else "?", "places": sorted(set(places))}


def niced_chromium(folder: Path, nice: int) -> str:
    """A launcher for Chromium at a lower scheduling priority. Playwright starts the browser in
    a session of its own, and with the kernel's autogroups a session gets a fair share of the
    CPU whatever its processes' nice values: so the launcher sets its session's autogroup nice.
    Inside it, run as root, Chromium would set its renderers back to nice 0 (some threads to -8):
    without CAP_SYS_NICE it cannot, so the launcher drops that capability."""
    launcher = folder / "chromium-niced"
    drop = "setpriv --bounding-set -sys_nice --inh-caps -sys_nice " if os.geteuid() == 0 else ""
    launcher.write_text("#!/bin/sh\n"
                        f"echo {nice} > /proc/self/autogroup 2>/dev/null\n"
                        f'exec nice -n {nice} {drop}{CHROMIUM} "$@"\n')
    launcher.chmod(0o755)
    return str(launcher)


async def kill_mid_analysis(browser, url: str, clips: list[Path], server_pid: int) -> dict:
    """One session uploads; once a stage of its analysis shows, every worker process is
    SIGKILLed. Returns how long until the page showed its error, the error, and the next
    upload's result."""
    context, page, _, _ = await open_analyze(browser, url)
    await page.locator("[data-testid='stFileUploaderDropzoneInput']").set_input_files(
        str(clips[0]))
    await page.get_by_test_id("stProgress").filter(
        has_text=re.compile(r"Finding faces|Scoring the faces|Drawing")).first.wait_for()
    for pid in _workers_of(server_pid):
        os.kill(pid, signal.SIGKILL)
    killed = time.perf_counter()
    alert = page.get_by_test_id("stAlertContentError").filter(has_text="worker")
    await alert.wait_for()
    seconds = time.perf_counter() - killed
    message = (await alert.inner_text()).strip().splitlines()[-1]     # past the icon's name
    after = await analyse(page, clips[1 % len(clips)])
    await context.close()
    return {"seconds": seconds, "message": message, "after": after}


async def run(args, url: str, clips: list[Path], rss: PeakRss, folder: Path) -> dict:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        newcomer = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        # The uploaders' browsers stand for browsers on their users' own machines: on this one
        # they share the server's two cores, so they run at a lower priority (--clients-nice)
        # and their page rendering is not counted as the server's load.
        uploaders = await playwright.chromium.launch(
            executable_path=niced_chromium(folder, args.clients_nice)
            if args.clients_nice else CHROMIUM, args=CHROMIUM_ARGS)
        # Warm-up: the first script run imports TensorFlow and loads the models.
        context, page, warm, _ = await open_analyze(newcomer, url)
        await analyse(page, clips[0])
        await context.close()

        context, page, idle_load, idle_phases = await open_analyze(newcomer, url)
        alone = await analyse(page, clips[0])
        await context.close()

        sessions = [await open_analyze(uploaders, url) for _ in clips]
        uploads = [asyncio.create_task(analyse(page, clip))
                   for (_, page, _, _), clip in zip(sessions, clips)]
        await asyncio.sleep(1.0)
        busy_loads, busy_phases = [], []
        cpu_before, probes_started = cpu_by_role(rss.pid), time.perf_counter()
        for _ in range(args.probes):     # one newcomer after another while the line is long
            extra_context, _, seconds, phases = await open_analyze(newcomer, url)
            busy_loads.append(seconds)
            busy_phases.append(phases)
            await extra_context.close()
        cpu = cpu_text(cpu_before, cpu_by_role(rss.pid), time.perf_counter() - probes_started)
        results = await asyncio.gather(*uploads)
        for context, _, _, _ in sessions:
            await context.close()
        await uploaders.close()
        fault = (await kill_mid_analysis(newcomer, url, clips, rss.pid)
                 if _workers_of(rss.pid) else None)
        await newcomer.close()

    return {"warm": warm, "idle_load": idle_load, "alone": alone, "results": results,
            "busy_loads": busy_loads, "fault": fault, "idle_phases": idle_phases,
            "busy_phases": busy_phases, "cpu": cpu}


def report(mode: str, args, measured: dict, rss: PeakRss, problems: list[str]) -> None:
    alone, results, busy_loads = measured["alone"], measured["results"], measured["busy_loads"]
    print(f"\n== {mode}: {MODE_TEXT[mode]}; {args.slots or 'default'} analysis slot(s), "
          f"first page load (cold) {measured['warm']:.1f} s")
    print(f"  idle: Analyze page load            {measured['idle_load']:6.2f} s")
    print(f"  idle: one upload, time to verdict  {alone['seconds']:6.2f} s ({alone['clip']})")
    print(f"  {len(results)} sessions uploading at once:")
    for number, result in enumerate(results, start=1):
        print(f"    session {number}: {result['clip']:<24} verdict {result['label']:<9} "
              f"in {result['seconds']:6.2f} s  own clip: {'yes' if result['own_clip'] else 'NO'}"
              f"  places in line shown: {result['places'] or 'none (ran at once)'}")
    worst = max(busy_loads)
    print("  newcomers: Analyze page load       "
          + ", ".join(f"{s:.2f}" for s in busy_loads)
          + f" s; slowest {worst:.2f} s  target <= 2 s: {'met' if worst <= 2 else 'MISSED'}")
    print(f"  (uploaders' browsers at nice {args.clients_nice}, newcomers' at 0)")
    print("  where a page load's time goes (seconds from the start: HTML, assets, websocket "
          "connected, uploader drawn, script run done):")
    print(f"    idle:       {phases_text(measured['idle_phases'])}")
    for number, phases in enumerate(measured["busy_phases"], start=1):
        print(f"    newcomer {number}: {phases_text(phases)}")
    print(f"  CPU while the newcomers loaded: {measured['cpu']}")
    print(f"  peak RSS: server {rss.peak / 2**20:.0f} MiB, "
          f"worker processes {rss.workers_peak / 2**20:.0f} MiB")
    fault = measured.get("fault")
    if fault:
        after = fault["after"]
        print(f"  worker killed mid-analysis: message on the page after {fault['seconds']:.2f} s "
              f"(target <= 10 s: {'met' if fault['seconds'] <= 10 else 'MISSED'}): "
              f"\"{fault['message']}\"")
        print(f"    next upload: verdict {after['label']} in {after['seconds']:.2f} s, own clip: "
              f"{'yes' if after['own_clip'] else 'NO'}")
    print(f"  exceptions in the server log       {len(problems)}")
    for line in problems[:10]:
        print(f"    {line}")


MODE_TEXT = {"inline": "analyses in the server process (the baseline: the app before workers)",
             "process": "analyses in a worker process (the default)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=Path, nargs="+", default=None,
                        help="real clips to upload, one session each (distinct file names)")
    parser.add_argument("--sessions", type=int, default=4,
                        help="without --clips: this many generated clips")
    parser.add_argument("--modes", default="inline,process",
                        help="DEEPFAKE_ANALYSIS_WORKERS values to run, in order")
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--slots", type=int, default=None,
                        help="DEEPFAKE_ANALYSIS_SLOTS for the server (default: the app's)")
    parser.add_argument("--probes", type=int, default=5,
                        help="newcomers loading the Analyze page one after another while busy")
    parser.add_argument("--clients-nice", type=int, default=19,
                        help="priority of the uploaders' browser (0: same as the newcomers')")
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if args.clips and len({c.name for c in args.clips}) != len(args.clips):
        parser.error("--clips: the file names must differ (each page is told apart by it)")

    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        folder = Path(tmp)
        if args.clips:
            clips = [c.resolve() for c in args.clips]
        else:
            # Different clips (face size, person count, length), so each verdict is told apart.
            clips = [make_face_clip(folder / f"clip{n + 1}.mp4", frames=120 + 24 * n,
                                    size=(640, 360), faces=1 + n % 2, face_size=110 + 10 * n)
                     for n in range(args.sessions)]
        print(f"clips: {', '.join(c.name for c in clips)}; models from {args.models_dir}; "
              f"{os.cpu_count()} cores")
        for mode in modes:
            env = {**os.environ, "DEEPFAKE_MODELS_DIR": str(args.models_dir),
                   "TF_CPP_MIN_LOG_LEVEL": "2", "DEEPFAKE_ICE_SERVERS": "[]",
                   "DEEPFAKE_ANALYSIS_WORKERS": mode}
            if args.slots:
                env["DEEPFAKE_ANALYSIS_SLOTS"] = str(args.slots)
            log_path = folder / f"server-{mode}.log"
            with streamlit_server(env, log_path, start_seconds=180) as (url, server):
                rss = PeakRss(server.pid)
                measured = asyncio.run(run(args, url, clips, rss, folder))
                rss.stop()
            text = log_path.read_text(errors="replace")
            problems = [line for line in text.splitlines()
                        if "Traceback" in line or re.search(r"\b\w+(Error|Exception)\b:", line)]
            report(mode, args, measured, rss, problems)


if __name__ == "__main__":
    main()
