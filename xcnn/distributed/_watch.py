"""The watcher of one host's ranks (see ``faults.py``); runs as ``python -I _watch.py JSON``.

It imports nothing but the standard library, and lives in its own session so that
the launcher's SIGKILL of the ranks' process groups leaves it running long enough
to report. It learns the instant a rank ends from a pidfd (Linux 5.3+; elsewhere it
polls every 50 ms), then reads the rank's exit marker:

* ``ok``: the rank finished;
* ``error``: the rank printed an error and stopped the job; say nothing more;
* none: the rank was killed, crashed or ran out of memory. The first such rank is
  named on stderr, unless a rank already reported an error (then the others were
  stopped by the launcher).

It exits when every rank on its host has ended, and removes the markers.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import sys
import time


def main(arguments: dict) -> None:
    host, world, markers = arguments["host"], arguments["world"], arguments["markers"]
    ranks = {int(pid): int(rank) for rank, pid in arguments["ranks"]}
    reported = False
    for pid, rank in _exits(ranks):
        status = _status(markers, rank)
        if reported or status == "ok":
            continue
        reported = True  # the job is ending: report at most one rank
        if status == "error" or any(_status(markers, r) == "error" for r in ranks.values()):
            continue  # a rank printed its error and stopped the job; the others were stopped
        if world == len(ranks):
            detail = "the launcher stops the other ranks"
        else:
            detail = (
                "it is the first rank on this host to end; if a rank on another host failed "
                "first, the launcher stopped this one"
            )
        os.write(
            2,
            f"xcnn.distributed: rank {rank} (pid {pid} on {host}) was lost: it ended without "
            f"finishing (killed, crashed or out of memory); {detail}\n".encode(),
        )
    shutil.rmtree(markers, ignore_errors=True)


def _status(markers: str, rank: int) -> str:
    try:
        with open(os.path.join(markers, str(rank))) as file:
            return file.read().strip()
    except OSError:
        return ""


def _exits(alive: dict[int, int]):
    """Yield ``(pid, rank)`` as each process ends, in the order they end."""
    remaining = dict(alive)
    fds = {}
    if hasattr(os, "pidfd_open"):
        for pid in list(remaining):
            try:
                fds[os.pidfd_open(pid)] = pid
            except ProcessLookupError:
                yield pid, remaining.pop(pid)
            except OSError:  # no pidfd support: poll below
                break
    if fds and len(fds) == len(remaining):
        poller = select.poll()
        for fd in fds:
            poller.register(fd, select.POLLIN)
        while fds:
            for fd, _ in poller.poll():
                poller.unregister(fd)
                os.close(fd)
                pid = fds.pop(fd)
                yield pid, remaining.pop(pid)
        return
    for fd in fds:
        os.close(fd)
    while remaining:
        for pid in list(remaining):
            if not _running(pid):
                yield pid, remaining.pop(pid)
        time.sleep(0.05)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
