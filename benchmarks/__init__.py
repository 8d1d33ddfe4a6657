"""MotionGuard's benchmarks (``make bench``; not tests).

Every comparison runs both of its sides in the same run, interleaved, and
reports their ratio: the machines these run on are shared and noisy, so an
absolute figure from one run is only good for the ratio next to it.

* :mod:`benchmarks.corpus` builds the synthetic videos once (ffmpeg) and caches them.
* :mod:`benchmarks.bench_sampling` - sampling cost versus video length.
* :mod:`benchmarks.bench_scan` - ``motionguard scan`` versus a naive pipeline
  (:mod:`benchmarks.naive`) and versus the model alone (:mod:`benchmarks.floor`).
* :mod:`benchmarks.bench_worker` - the Kafka worker under sustained load and a burst.
* :mod:`benchmarks.gpu_bench` - image-tower throughput and decode + embed on a GPU
  (runs, slowly, on the CPU too).
* :mod:`benchmarks.report` writes ``BENCHMARKS.md`` from the results.
"""
