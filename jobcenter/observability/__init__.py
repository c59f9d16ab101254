"""Prometheus metrics at /metrics (docs/operations.md#metrics).

- `metrics`: the counters and the histogram that sync runs, hot passes and alert
  deliveries add to where they end, in whichever process runs them;
- `files`: multiprocess mode, where those live in files that every process of a node
  shares (`PROMETHEUS_MULTIPROC_DIR`), and the compaction of dead processes' files;
- `collector`: the gauges read from the database at scrape time, a constant number of
  queries;
- `views`: the endpoint, its access rule (loopback with DEBUG, else a bearer token),
  answered ahead of the Host check and the HTTPS redirect as /healthz is;
- `gunicorn`: gunicorn's configuration hooks for multiprocess mode.
"""
