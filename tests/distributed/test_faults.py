"""Faults under mpiexec: every one ends the job within a bounded time and says which rank.

What the launcher does by itself is in ``xcnn/distributed/faults.py``; these runs
check what a user sees on top of it.
"""

from __future__ import annotations

import re
import time

import pytest

# Each run ends well within this (measured here: about 1 s, the hang test 2 s + its limit).
BOUND = 30.0


def test_a_killed_rank_ends_the_job_and_is_named(mpirun, tmp_path):
    run = mpirun(2, "kill", "1", "20", timeout=BOUND + 30)
    ended = time.time()
    assert run.returncode != 0
    assert ended - float((tmp_path / "killed_at").read_text()) < BOUND
    assert not list(tmp_path.glob("finished*")), run.output
    pid = (tmp_path / "pid1").read_text()
    assert f"rank 1 = pid {pid} on " in run.output  # rank 0's table at start
    lost = re.findall(r"xcnn\.distributed: rank (\d+) \(pid (\d+) on .*\) was lost", run.output)
    assert lost == [("1", pid)], run.output  # the victim, named once; never the survivors
    assert run.leftovers() == []  # the watcher removed its exit markers


def test_a_rank_that_hangs_is_stopped_by_the_time_limit(mpirun, tmp_path):
    run = mpirun(2, "hang", env={"XCNN_DIST_TIMEOUT": "2"}, timeout=BOUND + 30)
    assert run.returncode != 0
    assert run.seconds < BOUND
    assert "rank 0 waited 2 s in all_reduce without an answer" in run.output, run.output
    assert not list(tmp_path.glob("finished*"))
    assert "was lost" not in run.output  # nobody died: stopped on the reported error


def test_an_exception_on_one_rank_stops_the_others(mpirun, tmp_path):
    run = mpirun(2, "error", timeout=BOUND + 30)
    assert run.returncode != 0
    assert run.seconds < BOUND
    assert "xcnn.distributed: rank 1 stopped on this error:" in run.output
    assert "ValueError: rank 1 fails on purpose" in run.output
    assert not list(tmp_path.glob("finished*"))
    assert "was lost" not in run.output
    assert run.leftovers() == []


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        (
            "shapes",
            "DistributedDataParallel: the ranks' models differ: parameter '11.weight' has "
            "shape (10, 84) on rank 0 but (12, 84) on rank 1",
        ),
        (
            "hyper",
            "xcnn.distributed: hyper-parameters differ across ranks: lr is 0.1 on rank 0 "
            "but 0.05 on rank 1",
        ),
    ],
)
def test_a_mismatch_at_wrap_time_raises_on_every_rank(mpirun, tmp_path, kind, message):
    run = mpirun(2, "mismatch", kind, timeout=BOUND + 30)
    assert run.returncode != 0
    assert run.seconds < BOUND
    for rank in (0, 1):
        report = run.output.split(f"xcnn.distributed: rank {rank} stopped on this error:")
        assert len(report) == 2, run.output
        assert "RankMismatchError: " + message in report[1].split("xcnn.distributed: rank")[0]
    assert not list(tmp_path.glob("passed*"))
