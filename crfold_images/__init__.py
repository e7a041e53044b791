"""crfold_images: image VAEs (VAE, IWAE, beta-VAE, NVAE) with consistency regularization.

Built on :mod:`crfold.consistency` and :mod:`crfold.metrics`; see the issues for the roadmap.
"""
