"""The scripts in examples/ run offline and print what their docstrings promise."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_custom_model_example_trains_three_models(tmp_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["XCNN_DATA"] = str(tmp_path)  # offline: the bundled sample; never the user's cache
    env.pop("XCNN_BACKEND", None)
    out = subprocess.run(
        [sys.executable, str(REPO / "examples" / "custom_model.py"), "--steps", "40"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if "test accuracy" in line]
    assert [line.split()[0] for line in lines] == ["(a)", "(b)", "(c)"], out.stdout
    for line in lines:
        loss, accuracy = re.search(
            r"final loss (\d+\.\d{4}) .*test accuracy: (\d\.\d{4})$", line
        ).groups()
        assert 0 < float(loss) < 2.0  # chance is log(10) = 2.30; 40 steps reach 1.0-1.8
        assert 0.4 < float(accuracy) <= 1  # chance is 0.1; 40 steps reach 0.5-0.65
