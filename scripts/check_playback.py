"""Plays MP4 files in Debian's Chromium, as the app's page plays an annotated video, and prints
per file what the browser made of it: its size, its duration, how far it played and how many
frames it decoded and dropped.

    python scripts/check_playback.py out/*.annotated.mp4

Exit status 1 when any file did not play to its end."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
ORIGIN = "http://playback.check"
PLAY = """async v => {
  v.muted = true; v.playbackRate = 4;
  await v.play();
  await new Promise(done => { v.onended = done; setTimeout(done, 60000); });
  const q = v.getVideoPlaybackQuality();
  return {width: v.videoWidth, height: v.videoHeight, duration: v.duration,
          played: v.currentTime, ended: v.ended, error: v.error && v.error.message,
          frames: q.totalVideoFrames, dropped: q.droppedVideoFrames};
}"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("videos", nargs="+", type=Path)
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    failed = 0
    print("file | size | duration (s) | played (s) | frames decoded | dropped | ended")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu",
                                            "--autoplay-policy=no-user-gesture-required"])
        page = browser.new_page()
        # Served from an http origin, as the app serves them (a page may not load file:// media).
        files = {f"/{i}.mp4": video for i, video in enumerate(args.videos)}
        page.route(f"{ORIGIN}/**", lambda route: route.fulfill(
            path=str(files[route.request.url.removeprefix(ORIGIN)]), content_type="video/mp4")
            if route.request.url.endswith(".mp4") else route.fulfill(
            body="<!doctype html><video></video>", content_type="text/html"))
        page.goto(f"{ORIGIN}/index.html")
        for i, video in enumerate(args.videos):
            page.locator("video").evaluate(f"v => {{ v.src = '/{i}.mp4'; }}")
            try:
                seen = page.locator("video").evaluate(PLAY)
            except Exception as error:  # noqa: BLE001 - reported as this file's failure
                seen = {"error": str(error).splitlines()[0], "ended": False}
            failed += not seen.get("ended")
            if seen.get("error"):
                print(f"{video.name} | error: {seen['error']}")
                continue
            print(f"{video.name} | {seen['width']}x{seen['height']} | {seen['duration']:.2f} | "
                  f"{seen['played']:.2f} | {seen['frames']} | {seen['dropped']} | "
                  f"{seen['ended']}")
        browser.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
