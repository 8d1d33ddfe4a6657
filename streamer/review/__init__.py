"""The moderator review console (``motionguard review``): a web app over the verdicts and labels topics.

It reads and writes Kafka only (never the worker's memory): :mod:`.queue` is the
state, :mod:`.feed` the Kafka side, :mod:`.app` the web layer, :mod:`.auth`
sign-in, :mod:`.evidence` media and thumbnails, :mod:`.metrics` its metrics.
"""
