"""stream_learner: online River models that learn while they serve Kafka events.

The public surface is small: settings, the codec, the pure learner, the
service loop and its edges. See README.md and docs/.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("stream-learner")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
