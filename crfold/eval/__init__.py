"""Evaluation of trained FoldingNet runs: codes, reconstructions, probes, consistency, ``eval.json``.

One module per responsibility (import from the module; this package re-exports nothing, so that
importing one piece never loads the others):

* :mod:`.encode` - a run's model and config (:func:`~.encode.load_run`,
  :func:`~.encode.load_run_state`) and the posteriors of a split (:func:`~.encode.encode_posteriors`,
  :func:`~.encode.encode_dataset`);
* :mod:`.reconstruction` - the Chamfer of decode(mu(x)) against x in both conventions;
* :mod:`.probe` - linear probes on frozen codes (linear SVM, logistic regression; sklearn), on
  raw and standardized codes;
* :mod:`.consistency` - latent consistency under held-out transforms (rotation, translation,
  scale, jitter);
* :mod:`.run` - the run-level commands: :func:`~.run.evaluate_run` (``crfold eval`` ->
  ``eval.json``) and :func:`~.run.probe_run` (``crfold probe`` -> ``probe.json``);
* :mod:`.output` - claiming a run directory before computing (checkpoint present, folder
  writable, the run's :class:`crfold.io.RunLock`);
* :mod:`.format` - the human lines the commands print.

>>> from crfold.eval.run import evaluate_run
>>> evaluate_run("runs/demo")["probe"]["raw"]["svm"]["accuracy"]      # doctest: +SKIP

Codes are posterior means mu(x) in eval mode, without augmentation and without gradients.
"""
