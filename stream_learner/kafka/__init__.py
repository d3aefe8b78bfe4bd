"""Every Kafka client the service builds, for either client library.

``kafka.client`` picks the library: ``kafka-python`` (the default, pure
Python) or ``confluent-kafka`` (librdkafka; ``pip install
stream-learner[confluent]``). Both give the same source and sink interfaces
and the same guarantees; :mod:`stream_learner.commits` drives either.

- :mod:`stream_learner.kafka.options`: connection, security and isolation
  options, written once, spelled for each client;
- :mod:`stream_learner.kafka.kafka_python` and
  :mod:`stream_learner.kafka.confluent`: one module per client (builders,
  source, sink);
- :mod:`stream_learner.kafka.factory`: the factory. It connects, checks the topics, and hands the
  built clients to the source and sink, whose constructors do no I/O.
"""
