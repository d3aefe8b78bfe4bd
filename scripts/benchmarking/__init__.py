"""The benchmark of ``scripts/benchmark.py``, one job per module.

workload
    events, topics, the three models and River's bare loop
workers
    the subprocess roles (service worker, edges loop, Quix Streams app, naive loop, load producer)
clients
    the harness's load producer and prediction reader
results
    what a run measures, as plain values
harness
    topics, groups, Redis keys and worker subprocesses of one run
measure
    the measurements that combine harness runs
report
    the generated markdown block, its targets and the page update
cli
    the command line
"""
