"""``python -m stream_learner``: the same as the ``stream-learner`` command."""

import sys

from stream_learner.cli import main

sys.exit(main())
