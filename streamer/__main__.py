"""``python -m streamer`` is the ``motionguard`` command."""

from streamer.cli import main

main()
