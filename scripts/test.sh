#!/usr/bin/env bash
# The whole test suite from nothing: install system and Python dependencies,
# start the real servers (Kafka, Redis), lint, type-check, run every test,
# and stop the servers this script started.
#
#   scripts/test.sh [pytest args...]      # TEST_WORKERS=N pytest processes (default 4)
#
# Reuses servers given by STREAM_LEARNER_TEST_KAFKA / STREAM_LEARNER_TEST_REDIS.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

log() { printf '[test] %s\n' "$*" >&2; }

# System packages: Redis server, promtool (Prometheus), a compose implementation, chromium
# (the live page's browser tests) and kcat (an independent Kafka producer for the bad-input tests).
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v kcat >/dev/null || missing+=(kcat)
command -v promtool >/dev/null || missing+=(prometheus)
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v mvn >/dev/null || missing+=(maven)
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
command -v chromium >/dev/null || missing+=(chromium)  # the page tests' headless browser
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]} (apt)"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Python environment.
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  "$PY" -m venv .venv
fi
# Debian's python3.11 makes venvs with pip 23.0, whose resolver spent over 15 minutes
# backtracking on these extras; a current pip resolves them in about a minute
.venv/bin/python -m pip install -q --disable-pip-version-check 'pip>=24'
# the bench extra too: the benchmark's smoke tests run its Quix Streams peer
log "installing stream-learner[dev,bench] into .venv"
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev,bench]'

# Servers.
started=0
if [ -z "${STREAM_LEARNER_TEST_KAFKA:-}" ] || [ -z "${STREAM_LEARNER_TEST_REDIS:-}" ]; then
  # capture first: `grep -q` closing the pipe early would fail the pipeline under pipefail
  status="$(scripts/servers.sh status)"
  if [[ "$status" == *down* ]]; then started=1; fi
fi
scripts/servers.sh start
# shellcheck disable=SC1091
source .servers/env
if [ "$started" = 1 ]; then trap 'scripts/servers.sh stop' EXIT; fi
export STREAM_LEARNER_REQUIRE_SERVERS=1

log "ruff"
.venv/bin/ruff check stream_learner tests scripts
log "mypy"
.venv/bin/mypy
# Most tests wait on the broker, Redis or a worker process rather than compute, so more
# pytest processes than cores shorten the run (tests/conftest.py keeps tests that share a
# module's server, browser or build on one of them). TEST_WORKERS=0: one process.
log "pytest"
.venv/bin/python -m pytest -n "${TEST_WORKERS:-4}" --dist loadgroup --durations=25 "$@"
