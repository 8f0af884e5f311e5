"""The local worker process: `python -m serving.worker --fd N` on one end of a socket the app
holds the other end of. It lowers its own CPU priority, limits TensorFlow's threads, then
answers one request (an analysis, or Grad-CAM heatmaps) after another, telling the app its
progress and, every second while it works, that it is alive. It exits when the app's end closes (the server stopped)."""
from __future__ import annotations

import argparse
import os
import socket
import threading
from multiprocessing.connection import Connection

from .protocol import error_reply, receive, send

HEARTBEAT_SECONDS = 1.0


def serve(connection: Connection, models_dir: str | None) -> None:
    from .analyst import Analyst

    analyst = Analyst(models_dir)
    sending = threading.Lock()

    def say(header: dict, blobs=()) -> None:
        with sending:
            send(connection, header, blobs)

    while True:
        try:
            header, blobs = receive(connection)
        except (EOFError, OSError):
            return
        done = threading.Event()

        def beat() -> None:
            while not done.wait(HEARTBEAT_SECONDS):
                say({"kind": "alive"})

        heart = threading.Thread(target=beat, name="heartbeat", daemon=True)
        heart.start()
        try:
            reply, reply_blobs = analyst.answer(
                header, blobs, lambda stage, fraction: say(
                    {"kind": "progress", "stage": stage, "fraction": fraction}))
        except Exception as error:  # noqa: BLE001 - every failure goes back as one line
            reply, reply_blobs = error_reply(error), []
        finally:
            done.set()
            heart.join()
        try:
            say(reply, reply_blobs)
        except (BrokenPipeError, OSError):
            return


def lower_priority(nice: int) -> None:
    """Nice this process, and its scheduling group too: with the kernel's autogroups (most
    desktop and many server kernels) nice values only weigh threads of one session against each
    other, and every session gets an equal share of the CPU. The worker runs in a session of its
    own (the app starts it so), whose group's nice makes it yield to the server and to anything
    else on the machine."""
    os.nice(nice)
    try:
        with open("/proc/self/autogroup", "w") as handle:
            handle.write(str(nice))
    except OSError:
        pass    # no autogroups here: the process's nice is all there is


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--models-dir", default=None)
    parser.add_argument("--nice", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="TensorFlow threads (0: all cores)")
    args = parser.parse_args(argv)
    if args.nice:
        lower_priority(args.nice)
    from core.threads import limit_threads

    limit_threads(args.threads or os.cpu_count() or 1)
    sock = socket.socket(fileno=args.fd)
    serve(Connection(sock.detach()), args.models_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
