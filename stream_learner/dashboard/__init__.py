"""The operator's page: a live view served by the worker, and the same view of a finished run.

- :mod:`~stream_learner.dashboard.history` samples what the worker already
  measures (at most once a second) into the JSON document of
  ``stream_learner/schemas/dashboard.json``, served at ``/api/v1/dashboard``;
- :mod:`~stream_learner.dashboard.report` builds the same document from a
  finished run's files (``stream-learner report``);
- :mod:`~stream_learner.dashboard.page` is the one renderer: a single HTML
  file with inline CSS and JavaScript that draws a document, either polled
  from the worker (the page at ``/``) or embedded (the report).

See ``docs/dashboard.md``.
"""

from stream_learner.dashboard.history import DASHBOARD_SCHEMA_VERSION, History
from stream_learner.dashboard.page import render_page

__all__ = ["DASHBOARD_SCHEMA_VERSION", "History", "render_page"]
