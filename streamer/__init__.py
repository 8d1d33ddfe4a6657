"""MotionGuard's streaming adapter: Faust agents around the ``detectors`` core."""
