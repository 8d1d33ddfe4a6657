"""Training, evaluation and fine-tuning (kept apart from the scoring core).

Nothing outside this package imports it, except the CLI commands, lazily: the
streaming worker never loads training code.  Modules:

* :mod:`~detectors.training.datasets`: DeepAction's folder layout, CSV manifests,
  grouped train/validation/test splits.
* :mod:`~detectors.training.cache`: sample and embed every video once, cached by
  file content and embedder (``motionguard embed``).
* :mod:`~detectors.training.train`: fit SVM or frame-to-prompt heads and write a
  bundle (``motionguard train``).
* :mod:`~detectors.training.metrics` and :mod:`~detectors.training.report`: the
  numbers and plots of ``motionguard evaluate``.
* :mod:`~detectors.training.evaluate`: clean, robustness and
  leave-one-generator-out evaluation.
* :mod:`~detectors.training.finetune`: contrastive fine-tuning (FT-CLIP).
* :mod:`~detectors.training.download`: fetch DeepAction from the model hub.
* :mod:`~detectors.training.cli`: the commands above, registered on a typer app.
"""
