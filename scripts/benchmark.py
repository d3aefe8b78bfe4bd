#!/usr/bin/env python3
"""Benchmark: River's ceiling, the service's throughput, latency and cost, on the real broker.

Run from the repository root (the broker is ``STREAM_LEARNER_TEST_KAFKA`` or ``--bootstrap``)::

    python scripts/benchmark.py              # full run, 6 to 10 minutes on 2 cores
    python scripts/benchmark.py --quick      # smaller samples, about 1 minute
    python scripts/benchmark.py --profile    # cProfile of the linear worker through the broker
    python scripts/benchmark.py --bare-only  # River's bare loop only: no broker needed
    python scripts/benchmark.py --gap 2      # only: which setup moves the linear throughput

One run measures, for a linear model, a tree model and an anomaly detector:

bare
    River's own loop over the same events, in this process: ``predict_proba_one``
    (``score_one`` for the detector) then ``learn_one``, one model per input
    partition as in the service. The ceiling (the better of a run before and
    one after the service's), and each event's own model time.
max
    The service (:class:`~stream_learner.service.Service` with the Kafka source
    and sink) in a worker subprocess, consuming N events produced beforehand:
    events/s from its first record to its last commit, CPU seconds of the
    worker process per million events (``getrusage``, every thread), peak RSS.
latency
    The same worker fed at 25 %, 50 % and 80 % of its maximum by an open-loop
    producer: every send time is scheduled in advance and written into the
    event's ``ts``; a late send is not skipped and still counts from its
    scheduled time, so there is no coordinated omission. Latency runs from
    the scheduled send time to the moment a consumer receives the prediction.
    The producer batches for up to 5 ms, as producers do by default, so that
    it does not load the broker with one request per event. Each phase also
    logs how late the events reach an independent reader of their topic
    (delay before the system under test can see them) and the CPU of the
    worker, the broker, the load producer and the readers (from ``/proc``).
    The load producer and that consumer use confluent-kafka when it is
    installed (``--harness``): on a small machine they share the cores with the
    worker and the broker, and librdkafka needs a tenth of kafka-python's CPU
    per record. The worker itself always runs the service as shipped.
floor
    Kafka's own ``EndToEndLatency`` tool (same jars, same broker): one
    produce -> consume hop with ``acks=all``, records of the events' size.
edges
    The worker's Kafka edges with nothing between them: poll a batch, send one
    prediction-sized record per event, flush, commit, through the project's own
    Kafka source, sink and commit strategy (kafka-python). With no decoding,
    model or metrics this is the client's own cost per event, and with the bare
    loop it bounds the throughput ratio the service can reach. The same loop is
    also run with confluent-kafka (librdkafka) when that package is installed
    (``pip install -e '.[bench]'``; the service's ``confluent`` extra).
checkpoint
    Throughput with a checkpoint every second against none, and the time a
    worker spends restoring state when its partitions are assigned.
peers
    The linear case through the service once per Kafka client (``--clients``,
    default both; a client the installed service refuses is skipped with one
    line), drift on and Redis checkpoints every second, next to a Quix Streams
    app (``quixstreams``, in the ``bench`` extra) and a naive kafka-python loop
    (json, one send per event, no commits) doing the same predict-then-learn
    with the same River model, on the same pre-produced events: maximum
    throughput, then end-to-end latency at 2,000 and 5,000 events/s seen by a
    downstream consumer (service and Quix app). The targets against the peers
    are ratios within the run.

The targets are ratios taken within the same run, so that a busy machine moves
both sides. Every topic and consumer group is unique to the run and deleted at
the end. Results go to stdout and, between the generated-block markers, to
``docs/benchmarks.md`` (text outside the markers is kept).

This file is the command; the code is the ``benchmarking`` package next to it,
one job per module: ``workload`` (events, topics, models, River's bare loop),
``workers`` (the subprocess roles, started as ``benchmark.py --role ...``),
``clients`` (load producer, prediction reader), ``harness`` (topics, groups,
worker subprocesses), ``measure`` (checkpoints, edges, peers, gap, profile),
``results``, ``report`` (the generated block and its targets) and ``cli``.
"""

from __future__ import annotations

import sys
from pathlib import Path

# the benchmark's package lives next to this file: scripts/benchmarking/
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.append(str(Path(__file__).resolve().parent))

from benchmarking.cli import main, parse_sets, run
from benchmarking.harness import CHECKPOINTS_PENDING, Bench
from benchmarking.report import (
    BEGIN,
    DOC,
    END,
    edges_ceiling,
    peer_targets,
    render,
    render_edges,
    render_gap,
    render_peers,
    write_doc,
)
from benchmarking.results import (
    BigRestore,
    CaseResult,
    Edges,
    Floor,
    LatencyRun,
    MaxRun,
    Peer,
    Peers,
)
from benchmarking.workload import (
    CASES,
    CLIENTS,
    GAP_VARIANTS,
    LOAD_LEVELS,
    NAIVE,
    PARTITIONS,
    PEER_RATES,
    QUIX,
    ROOT,
    SENSORS,
    Bare,
    Case,
    GapVariant,
    Plan,
    bare_loop,
    build_model,
    client_support,
    encoded_events,
    event,
    percentile,
    samples,
    sensor,
    service_peer,
    service_support,
)

# the names the tests and scripts/bench_core.py use when they load this file
__all__ = [
    "BEGIN", "CASES", "CHECKPOINTS_PENDING", "CLIENTS", "DOC", "END", "GAP_VARIANTS",
    "LOAD_LEVELS", "NAIVE", "PARTITIONS", "PEER_RATES", "QUIX", "ROOT", "SENSORS", "Bare",
    "Bench", "BigRestore", "Case", "CaseResult", "Edges", "Floor", "GapVariant", "LatencyRun",
    "MaxRun", "Peer", "Peers", "Plan", "bare_loop", "build_model", "client_support",
    "edges_ceiling", "encoded_events", "event", "main", "parse_sets", "peer_targets",
    "percentile", "render", "render_edges", "render_gap", "render_peers", "run", "samples",
    "sensor", "service_peer", "service_support", "write_doc",
]

if __name__ == "__main__":
    sys.exit(main())
