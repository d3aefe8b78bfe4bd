"""Create the topics a worker needs on a broker of your own, as the compose stack does.

    python scripts/create_topics.py -c config/kafka.toml [--partitions 6]

The topic names come from the settings (file, then ``STREAM_LEARNER_*``
variables), the connection and security options too. The events topic and
the labels topic (when ``kafka.labels_topic`` is set) get ``--partitions``
partitions, and so does the predictions topic; the dead-letter, alerts and
metrics topics get one (the same counts and retentions as
``config/compose/create-topics.sh``). Topics that exist are left as they are;
a labels topic whose partition count differs from the events topic's is an
error, as the worker refuses it at start. Replication factor 1: for a
single-broker development setup; a production cluster's topics are its
operators' to create.
"""

from __future__ import annotations

import argparse
import os
import sys

from stream_learner.errors import StreamLearnerError
from stream_learner.kafka.options import check_copartitioned, kafka_client_options
from stream_learner.settings import Settings, load_settings
from stream_learner.sinks import output_topics

#: retention (ms) of the topics operators read after the fact
RETENTION = {"dead_letters": 14 * 86_400_000, "learn_dead_letters": 14 * 86_400_000,
             "metrics": 7 * 86_400_000}


def planned(settings: Settings, partitions: int) -> dict[str, tuple[int, dict[str, str]]]:
    """Each topic the worker needs: its partition count and its configuration.

    Examples
    --------
    >>> plan = planned(Settings(), 6)
    >>> plan["events"], plan["events.dlq"]
    ((6, {}), (1, {'retention.ms': '1209600000'}))
    """
    k = settings.kafka
    plan: dict[str, tuple[int, dict[str, str]]] = {k.events_topic: (partitions, {})}
    if k.labels_topic:
        plan[k.labels_topic] = (partitions, {})
    for role, topic in output_topics(settings).items():
        configs = {"retention.ms": str(RETENTION[role])} if role in RETENTION else {}
        plan.setdefault(topic, (partitions if role == "predictions" else 1, configs))
    return plan


def create(settings: Settings, partitions: int, environ: dict[str, str]) -> list[str]:
    """Create the missing topics; return one line per topic."""
    from kafka.admin import KafkaAdminClient, NewTopic

    plan = planned(settings, partitions)
    options = kafka_client_options(settings.kafka, environ)
    admin = KafkaAdminClient(**{**options, "client_id": "stream-learner-create-topics"})
    try:
        existing = set(admin.list_topics())
        missing = [NewTopic(name, count, 1, topic_configs=configs)
                   for name, (count, configs) in plan.items() if name not in existing]
        if missing:
            admin.create_topics(missing, timeout_ms=30_000)
        described = admin.describe_topics(list(plan))
        # the topic's name is "name" in newer kafka-python releases, "topic" in older ones
        counts = {d.get("name", d.get("topic")): len(d["partitions"]) for d in described}
    finally:
        admin.close()
    k = settings.kafka
    if k.labels_topic:
        check_copartitioned((k.events_topic, counts[k.events_topic]),
                            (k.labels_topic, counts[k.labels_topic]))
    made = {t.name for t in missing}
    return [f"topic {name}: {counts[name]} partitions"
            + (" (created)" if name in made else " (exists)") for name in plan]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--config", help="TOML settings file (as for stream-learner run)")
    parser.add_argument("--partitions", type=int, default=6,
                        help="partitions of the events, labels and predictions topics (6)")
    args = parser.parse_args(argv)
    if args.partitions < 1:
        parser.error("--partitions must be at least 1")
    environ = dict(os.environ)
    try:
        settings = load_settings(args.config, environ)
        for line in create(settings, args.partitions, environ):
            print(line)
    except StreamLearnerError as exc:
        print(f"create_topics: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # the admin client's errors: one line with the broker
        print(f"create_topics: {settings.kafka.bootstrap_servers}: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
