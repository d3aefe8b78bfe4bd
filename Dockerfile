# The stream-learner service: `docker build -t stream-learner .`
#
#   docker run --rm stream-learner run                      # the embedded default
#   docker run --rm -v $PWD/config:/etc/stream-learner:ro \
#     -e STREAM_LEARNER_KAFKA__BOOTSTRAP_SERVERS=broker:9092 \
#     stream-learner run -c /etc/stream-learner/kafka.toml
#
# Settings: a TOML file (-c) plus STREAM_LEARNER_<SECTION>__<KEY> variables
# (docs/configuration.md). The healthcheck probes the metrics endpoint, so a
# worker run in a container needs metrics.enabled = true and metrics.host =
# 0.0.0.0 (set below) for Prometheus to reach it.

# -- build: the project and its dependencies in a virtual environment ---------------
FROM python:3.11-slim AS build
WORKDIR /src
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/stream-learner
COPY pyproject.toml README.md ./
COPY stream_learner ./stream_learner
# with the confluent extra, so kafka.client = "confluent-kafka" works in the image
RUN /opt/stream-learner/bin/pip install '.[confluent]'

# -- runtime -------------------------------------------------------------------------
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    STREAM_LEARNER_METRICS__ENABLED=true \
    STREAM_LEARNER_METRICS__HOST=0.0.0.0 \
    STREAM_LEARNER_METRICS__PORT=9108 \
    PATH=/opt/stream-learner/bin:$PATH
COPY --from=build /opt/stream-learner /opt/stream-learner
RUN groupadd --system --gid 10001 stream-learner \
    && useradd --system --uid 10001 --gid stream-learner --home-dir /var/lib/stream-learner \
       --create-home --shell /usr/sbin/nologin stream-learner
USER stream-learner:stream-learner
WORKDIR /var/lib/stream-learner
EXPOSE 9108
# Exit 0 only when /healthz and /readyz both answer 200 (state restored, consuming).
# The probe imports only the standard library (no River, no SciPy): cheap every 15 s.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-m", "stream_learner.health", "http://127.0.0.1:9108", "--timeout", "3"]
ENTRYPOINT ["stream-learner"]
CMD ["run"]
