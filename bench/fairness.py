"""Fair share: ``python -m bench.fairness [REPEATS]``.

One browser sends 40 messages at once; 50 ms later five other browsers send one each. The
pool has 1 agent with 2 slots and the model takes 300 ms. Measured in one run, each
scenario ``REPEATS`` times (default 3), alternately:

- **fair**: the app as configured (owners take turns, at most ``MAX_RUNS_PER_USER`` = 2
  slots per owner);
- **FIFO**: the seed's queue, first come first served: the same pool, but it cannot tell
  the 40 messages come from one browser (each has an owner of its own, so the round-robin
  over owners is arrival order).

Reports each latecomer's wait until its reply is complete (median of the five, median over
the repeats) and whether every latecomer was answered before the 40 were done. Target:
median ≤ 3 s with fair share, where FIFO gives ~6 s. Writes ``bench/results/fairness.json``.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.suite import slow_factory
from core import ChatbotSessionManager

FLOOD, LATECOMERS, LATE_BY, MODEL_SECONDS, SLOTS = 40, 5, 0.05, 0.3, 2
TARGET_MEDIAN_S = 3.0


def scenario(fair: bool) -> dict[str, Any]:
    folder = tempfile.mkdtemp(prefix="poolchat-fair-")
    manager = ChatbotSessionManager(slow_factory(MODEL_SECONDS), RATE_LIMIT_PER_MINUTE=0,
                                    DATABASE_URL=f"sqlite:///{folder}/bench.db",
                                    AGENT_POOL_SIZE=1, AGENT_MAX_CONCURRENCY=SLOTS,
                                    MAX_RUNS_PER_USER=2, AGENT_QUEUE_TIMEOUT=600)
    try:
        flooder = "flooding-browser"
        flood_sessions = [manager.create_session(owner=flooder if fair else uuid.uuid4().hex)
                          for _ in range(FLOOD)]
        late_sessions = [manager.create_session(owner=f"browser-{i}")
                         for i in range(LATECOMERS)]
        began = time.monotonic()
        flood = [s.start("hello") for s in flood_sessions]
        time.sleep(LATE_BY - (time.monotonic() - began))  # the scenario's 50 ms, not a sync
        sent = time.monotonic()
        late = [s.start("hello") for s in late_sessions]
        for run in late + flood:
            run.wait(600)
        waits = [run.finished_at - sent for run in late]
        flood_done = max(run.finished_at for run in flood)
        return {"fair": fair, "latecomer_waits_s": [round(w, 3) for w in waits],
                "latecomer_median_s": statistics.median(waits),
                "flood_done_s": flood_done - began,
                "latecomers_before_flood_done": all(r.finished_at < flood_done for r in late)}
    finally:
        manager.close()


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    runs: dict[str, list[dict[str, Any]]] = {"fair": [], "fifo": []}
    for _ in range(repeats):
        runs["fair"].append(scenario(True))
        runs["fifo"].append(scenario(False))
    summary = {}
    for name, rows in runs.items():
        summary[name] = {
            "latecomer_median_s": round(statistics.median(r["latecomer_median_s"]
                                                          for r in rows), 3),
            "flood_done_s": round(statistics.median(r["flood_done_s"] for r in rows), 3),
            "latecomers_before_flood_done": all(r["latecomers_before_flood_done"]
                                                for r in rows),
            "runs": rows,
        }
    fair, fifo = summary["fair"], summary["fifo"]
    target = {"target": f"latecomer median ≤ {TARGET_MEDIAN_S} s and every latecomer "
                        "answered before the 40 are done",
              "pass": fair["latecomer_median_s"] <= TARGET_MEDIAN_S
              and fair["latecomers_before_flood_done"],
              "fifo_over_fair": round(fifo["latecomer_median_s"]
                                      / fair["latecomer_median_s"], 2)}
    print(f"latecomers' median wait: fair {fair['latecomer_median_s']:.2f} s, FIFO "
          f"{fifo['latecomer_median_s']:.2f} s ({target['fifo_over_fair']}x); the 40 done "
          f"after {fair['flood_done_s']:.2f} s (fair) / {fifo['flood_done_s']:.2f} s (FIFO); "
          f"[{'PASS' if target['pass'] else 'FAIL'}] {target['target']}")
    out = Path(__file__).parent / "results" / "fairness.json"
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                               "repeats": repeats, "target": target, **summary}, indent=2))


if __name__ == "__main__":
    main()
