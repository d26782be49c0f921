"""How fast `humus alerts replay` goes over a season, and whether it finds the injected faults.

Builds a season of the alert tests' synthetic site (tests/observatory/alerts/alerts_support.py:
five soil probes every 15 minutes, a NIR probe hourly, the gateway's status every minute, with
the fourteen faults of the tests in its first three weeks) in a throw-away SQLite archive with
the gateway history the service would have recorded, then replays it at a 15-minute step.

    .venv/bin/python bench/alerts_replay.py [--days 90] [--step 900]

Prints the archive size, the replay's evaluations per second, and the episodes found; ends with
`RESULT alerts_replay ...`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "observatory" / "alerts"))

import alerts_support as S  # noqa: E402

from observatory.alerts.config import RulesSettings  # noqa: E402
from observatory.alerts.replay import format_timeline, replay  # noqa: E402
from observatory.alerts.state import AlertStore  # noqa: E402
from observatory.stores import open_store  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--step", type=float, default=900.0, help="evaluation step, seconds")
    args = ap.parse_args()

    t0 = time.monotonic()
    season = S.faulty_season(days=args.days)
    statuses = S.kept_statuses(season)
    print(f"season: {args.days} days, {len(season.observations)} observations, {len(statuses)} recorded "
          f"statuses (of {len(season.statuses)}), made in {time.monotonic() - t0:.1f} s", flush=True)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "archive.sqlite"
        store = open_store(f"sqlite:{path}")
        t0 = time.monotonic()
        store.write(season.observations)
        with AlertStore(path) as st:
            st.record_gateway(statuses, season.events)
        print(f"archive: written in {time.monotonic() - t0:.1f} s, {path.stat().st_size / 1e6:.1f} MB", flush=True)
        result = replay(store, season.start_ns, season.end_ns, RulesSettings(), step_s=args.step, state_path=path)
        store.close()
    for line in format_timeline(result.timeline):
        print("  " + line[:150])
    found = {(e.rule, e.subject) for e in result.timeline}
    expected = {(f.rule, f.subject) for f in S.FAULTS if f.start_ns < season.end_ns}
    print(f"replay: {result.evaluations} evaluations over {result.rows} rows in {result.seconds:.1f} s "
          f"({result.evaluations / result.seconds:.0f} evaluations/s); {len(found & expected)} of {len(expected)} "
          f"injected faults found, {len(found - expected)} other episode(s)")
    print(f"RESULT alerts_replay days={args.days} rows={result.rows} evaluations={result.evaluations} "
          f"seconds={result.seconds:.1f} evaluations_per_s={result.evaluations / result.seconds:.0f} "
          f"faults_found={len(found & expected)} faults_injected={len(expected)} "
          f"false_episodes={len(found - expected)}")


if __name__ == "__main__":
    main()
