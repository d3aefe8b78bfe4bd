"""Probe a running worker's HTTP endpoints: ``stream-learner check --live`` and the healthcheck.

``python -m stream_learner.health [URL] [--timeout S]`` is the container
healthcheck: it imports only the standard library (no River, SciPy or NumPy),
so a probe every 15 s costs a few milliseconds of CPU instead of a second.

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

import argparse
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # settings import pydantic: not needed to probe
    from stream_learner.settings import MetricsSettings

__all__ = ["DEFAULT_TIMEOUT_S", "DEFAULT_URL", "ProbeResult", "main", "metrics_url", "probe"]

#: What the container healthcheck probes: the worker's own metrics port.
DEFAULT_URL = "http://127.0.0.1:9108"

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
    >>> from stream_learner.settings import MetricsSettings
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


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m stream_learner.health``: exit 0 when ready, 1 (one line on stderr) if not."""
    parser = argparse.ArgumentParser(
        prog="python -m stream_learner.health",
        description="Probe a worker's /healthz and /readyz; exit 0 only if it is ready.",
    )
    parser.add_argument("url", nargs="?", default=DEFAULT_URL,
                        help=f"base URL of the metrics endpoint (default {DEFAULT_URL})")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                        help=f"seconds each request may take (default {DEFAULT_TIMEOUT_S:g})")
    args = parser.parse_args(argv)
    result = probe(args.url, args.timeout)
    if result.ok:
        print(result.message)
        return 0
    print(f"stream-learner: {result.message}", file=sys.stderr)
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
