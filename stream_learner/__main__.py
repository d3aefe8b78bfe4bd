"""``python -m stream_learner``: the same as the ``stream-learner`` command."""

import sys


def run() -> int:
    """The ``stream-learner`` command: :func:`stream_learner.cli.main`.

    Loading its modules (River, SciPy, the Kafka client) takes a second or
    two; a Ctrl-C meanwhile is the one-line exit 130 of a Ctrl-C later on, not
    a traceback.
    """
    try:
        from stream_learner.cli import main
    except KeyboardInterrupt:
        print("stream-learner: interrupted", file=sys.stderr)
        return 130
    return main()


if __name__ == "__main__":
    sys.exit(run())
