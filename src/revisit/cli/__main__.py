"""``python -m revisit.cli``: the same as the ``revisit`` command."""

from revisit.cli.main import run

run()
