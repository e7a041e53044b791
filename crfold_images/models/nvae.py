"""Deprecated: moved to :mod:`crfold_images.nvae.model` (this name is that module)."""

from crfold_images.nvae._deprecated import alias

alias(__name__, "crfold_images.nvae.model")
