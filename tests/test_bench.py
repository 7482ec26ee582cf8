"""The benchmark suite keeps working: a tiny run produces every section and target.

This asserts structure, never speed: speed is measured by `python -m bench`, not by tests.
"""

import json
import subprocess
import sys

from tests.servers import ROOT


def test_a_quick_benchmark_run_writes_results_and_a_chart(tmp_path):
    result = subprocess.run([sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=900)  # 2 busy cores
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads((tmp_path / "latest.json").read_text())
    assert {"creation", "memory", "overhead", "concurrency", "long_history", "targets"} <= set(data)
    assert all(row["replies_in_own_session"] == row["sessions"] for row in data["concurrency"])
    pools = [row for row in data["concurrency"] if row["design"] == "new"]
    assert pools and all(row["vs_floor"] > 0 and row["floor_s"] > 0 for row in pools)
    assert len(data["targets"]) == 8
    assert (tmp_path / "latest.png").stat().st_size > 10_000
    assert "Targets" in result.stdout
