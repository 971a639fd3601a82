"""The benchmarks' memory figures are the measured process's own, whatever its parent held."""

from __future__ import annotations

import json
import subprocess
import sys

from crm.settings import REPO_ROOT

CHILD = (
    "import json, resource; from benchmarks.report import own_peak_rss_mb; "
    "print(json.dumps({'own': own_peak_rss_mb(), 'ru_maxrss': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))"
)


def test_a_child_s_peak_is_its_own_not_its_parent_s():
    ballast = bytearray(600 * 1024 * 1024)  # the parent holds 600 MB when it starts the step
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1  # touched: resident
    done = subprocess.run([sys.executable, "-c", CHILD], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    del ballast
    figures = json.loads(done.stdout)
    assert figures["own"] < 200  # an interpreter's own size
    # what the benches used to report: the parent's resident size at fork, kept across exec
    assert figures["ru_maxrss"] > 600


FREED = (
    "import json; from benchmarks.report import own_peak_rss_mb; "
    "block = bytearray(300 * 1024 * 1024); block[::4096] = b'\\x01' * len(block[::4096]); del block; "
    "print(json.dumps({'own': own_peak_rss_mb()}))"
)


def test_the_figure_is_the_peak_not_the_size_now():
    """A step that allocated 300 MB and freed it before the figure was read reports at least 300 MB:
    a function returning the size now (or 0) would report an interpreter's size."""
    done = subprocess.run([sys.executable, "-c", FREED], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert json.loads(done.stdout)["own"] >= 300
