#!/usr/bin/env python3
"""Does ``stream-learner simulate`` hold its rate? Requested vs achieved, a few rates.

Publishes the default stream (Agrawal, 20 sensors) for a few seconds per rate to
a file (default /dev/null) or, with ``--kafka HOST:PORT --topic T``, to Kafka,
and prints a table. A benchmark, not a test: nothing is asserted.

Usage::

    python scripts/bench_simulate.py          # rates 100, 1000, 5000, 20000 to /dev/null
    python scripts/bench_simulate.py --seconds 5 --rates 200,2000
    python scripts/bench_simulate.py --kafka 127.0.0.1:19092 --topic events
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a source tree that is not installed
    sys.path.insert(0, str(ROOT))

from stream_learner.settings import KafkaSettings  # noqa: E402
from stream_learner.simulate import (  # noqa: E402
    EventWriter,
    FileWriter,
    KafkaWriter,
    SimulationPlan,
    publish,
    simulate,
)


def _writer(args: argparse.Namespace) -> EventWriter:
    if args.kafka:
        return KafkaWriter(KafkaSettings(bootstrap_servers=args.kafka), {}, args.topic)
    return FileWriter(args.output)


def main() -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="100,1000,5000,20000")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--output", default="/dev/null")
    parser.add_argument("--kafka", default="")
    parser.add_argument("--topic", default="events")
    args = parser.parse_args()
    print(f"{'requested/s':>12} {'events':>8} {'seconds':>8} {'achieved/s':>11} "
          f"{'ratio':>6} {'max lag ms':>10}")
    for rate in (float(r) for r in args.rates.split(",")):
        count = max(1, int(rate * args.seconds))
        plan = SimulationPlan(count=count, keys=20, seed=1)
        stats = publish(simulate(plan), _writer(args), rate)
        print(f"{rate:>12,.0f} {stats.events:>8,} {stats.elapsed_s:>8.2f} {stats.rate:>11,.0f} "
              f"{stats.rate / rate:>6.3f} {stats.max_lag_s * 1000:>10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
