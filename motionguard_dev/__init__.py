"""MotionGuard's development tools, kept off the worker's import path.

* :mod:`motionguard_dev.kafka_local` - a real local Apache Kafka (KRaft: one broker
  or a cluster), for development, the tests, the demo and the benchmarks;
* :mod:`motionguard_dev.kafka_secure` - the throwaway CA, TLS and SCRAM material of
  ``motionguard kafka start --secure``;
* :mod:`motionguard_dev.kafka_cli` - ``motionguard kafka start|stop|status``;
* :mod:`motionguard_dev.harness` - runs a real ``motionguard worker`` process and
  talks to it over Kafka (the worker tests and the benchmarks).

These may import the runtime packages (``detectors``, ``streamer``); the runtime
never imports them (``tests/test_layout.py`` checks both).  The worker image does
not ship this package (deploy/Dockerfile copies ``detectors`` and ``streamer``
only), so ``motionguard kafka start`` there says that it needs it.
"""
