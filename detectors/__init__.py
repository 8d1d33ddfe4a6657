"""MotionGuard's scoring core: sample frames, embed them, classify, vote.

This package is broker-free: it never imports ``streamer``, Faust, Kafka or
prometheus_client.  ``streamer`` is the thin streaming adapter around it.
"""

__version__ = "0.1.0"
