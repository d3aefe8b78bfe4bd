"""The one renderer: ``page.html`` draws a dashboard document, polled or embedded.

The live page is the file as it is: its script polls ``api/v1/dashboard``
every two seconds (not while the tab is hidden). A report is the same file
with the document embedded in place of the ``/*DOC*/`` marker; it never
polls. No external assets: styles, script and charts (SVG) are inline.

Examples
--------
>>> live = render_page()
>>> "api/v1/dashboard" in live and "/*DOC*/" in live
True
>>> report = render_page({"schema_version": 1, "note": "</script>"})
>>> '<script id="doc" type="application/json">{"schema_version":1' in report
True
>>> "<\\\\/script>" in report
True
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from typing import Any

import orjson

__all__ = ["render_page"]

_MARKER = "/*DOC*/"


@cache
def _template() -> str:
    return files("stream_learner.dashboard").joinpath("page.html").read_text(encoding="utf-8")


def render_page(document: dict[str, Any] | None = None) -> str:
    """The page; with ``document`` embedded (a self-contained report), else the live page."""
    page = _template()
    if document is None:
        return page
    data = orjson.dumps(document, option=orjson.OPT_NON_STR_KEYS).decode("utf-8")
    # "</" would end the script element; "<\/" is the same JSON string
    return page.replace(_MARKER, data.replace("</", "<\\/").replace("<!--", "<\\u0021--"), 1)
