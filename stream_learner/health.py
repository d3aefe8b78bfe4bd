"""Probe a running worker's HTTP endpoints: the ``stream-learner check --live`` command.

A worker serves ``/healthz`` (the process answers) and ``/readyz`` (state is
restored and it consumes; see :mod:`stream_learner.metrics`). :func:`probe`
asks both, with a short timeout, and sums the answer up in one line, so that a
container healthcheck or an operator gets a clear verdict and an exit code.

Examples
--------
>>> from stream_learner.metrics import Metrics, MetricsServer
>>> metrics = Metrics()
>>> server = MetricsServer(metrics, "127.0.0.1", 0).start()
>>> url = f"http://127.0.0.1:{server.port}"
>>> probe(url).ok
False
>>> metrics.set_ready(True)
>>> result = probe(url)
>>> result.ok, result.message == f"ready: {url}"
(True, True)
>>> server.close()
"""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass

from stream_learner.settings import MetricsSettings

__all__ = ["DEFAULT_TIMEOUT_S", "ProbeResult", "metrics_url", "probe"]

#: Seconds each request may take; a healthcheck must answer well within its own timeout.
DEFAULT_TIMEOUT_S = 2.0

_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


@dataclass(frozen=True)
class ProbeResult:
    """The verdict of one probe.

    Attributes
    ----------
    ok
        True only when ``/healthz`` and ``/readyz`` both answered 200.
    message
        One line for a human: ``ready: URL``, or what went wrong.
    """

    ok: bool
    message: str


class _Unreachable(Exception):
    """The endpoint did not answer over HTTP at all."""


def metrics_url(settings: MetricsSettings) -> str:
    """The base URL of the endpoint the settings describe, as seen from the same host.

    Examples
    --------
    >>> metrics_url(MetricsSettings(host="0.0.0.0", port=9108))
    'http://127.0.0.1:9108'
    >>> metrics_url(MetricsSettings(host="::", port=9108))
    'http://[::1]:9108'
    """
    host = _WILDCARDS.get(settings.host, settings.host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def _base(url: str) -> str:
    url = url.strip().rstrip("/")
    return url if "://" in url else f"http://{url}"


def _get(url: str, timeout_s: float) -> tuple[int, str]:
    """Status and first line of the body of a GET; raises :class:`_Unreachable`."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as reply:
            return int(reply.status), _first_line(reply.read(256))
    except urllib.error.HTTPError as exc:
        return int(exc.code), _first_line(exc.read(256))
    except urllib.error.URLError as exc:
        raise _Unreachable(_reason(exc.reason)) from exc
    except OSError as exc:
        raise _Unreachable(_reason(exc)) from exc


def _first_line(body: bytes) -> str:
    lines = body.decode("utf-8", "replace").strip().splitlines()
    return lines[0] if lines else ""


def _reason(error: object) -> str:
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return str(error)


def probe(url: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> ProbeResult:
    """Ask a worker's ``/healthz`` then ``/readyz``.

    Parameters
    ----------
    url
        Base URL of the worker's metrics endpoint, e.g. ``http://127.0.0.1:9108``
        (``http://`` is assumed when no scheme is given).
    timeout_s
        Seconds each request may take.

    Returns
    -------
    ProbeResult
        ``ok`` only when both endpoints answered 200.
    """
    base = _base(url)
    for path, verdict in (("/healthz", "unhealthy"), ("/readyz", "not ready")):
        try:
            status, body = _get(base + path, timeout_s)
        except _Unreachable as exc:
            return ProbeResult(False, f"unreachable: {base}{path}: {exc}")
        if status != 200:
            detail = f" ({body})" if body else ""
            return ProbeResult(False, f"{verdict}: {base}{path} answered {status}{detail}")
    return ProbeResult(True, f"ready: {base}")
