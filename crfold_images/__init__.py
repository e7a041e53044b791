"""crfold_images: image VAEs (VAE, IWAE, beta-VAE, NVAE) with consistency regularization.

Built on :mod:`crfold.consistency` (the CR objective) and :mod:`crfold.metrics` (MI, active
units, IW-NLL, latent consistency, probes); nothing of those is re-implemented here.

* :mod:`crfold_images.models` - WAE-style conv / MLP encoder-decoder, pixel likelihoods
  (Bernoulli, Gaussian, discretized logistic), VAE / IWAE / beta-VAE objectives in the modes
  base / +Aug / CR / triplet.
* :mod:`crfold_images.transforms` - batched per-image random affine (rotate, translate, scale).
* :mod:`crfold_images.data` - MNIST / Fashion-MNIST idx, the MNIST CSV, Omniglot zips and
  chardata.mat, CIFAR-10 pickles and image trees, CelebA; the embedded default (digits).
* :mod:`crfold_images.config`, :mod:`crfold_images.task` - the ``images`` task of the run engine
  (:mod:`crfold.train`): ``crfold images train KEY=VALUE ...`` (= ``crfold train task=images``).
* :mod:`crfold_images.nvae` - NVAE and CR-NVAE, the ``nvae`` task (``crfold nvae train``).
* :mod:`crfold_images.caveats` - what an evaluation's numbers can and cannot show: the flags
  (a probe at chance, an MI <= 0 or at its log B ceiling, no active unit) and caveats that
  ``eval.json``, the end of a run and every table carry.
* :mod:`crfold_images.train` - one run by directory from Python (``train_run``, over the
  engine); :mod:`crfold_images.experiments` - the paper's Tables 1-6, a spec on the shared
  experiment runner (:mod:`crfold.experiments.runner`; ``crfold images tables table1 ...``, also
  ``python -m crfold_images.experiments``); :mod:`crfold_images.cli` - ``crfold images``.
"""
