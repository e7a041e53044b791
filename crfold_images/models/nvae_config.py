"""Deprecated: moved to :mod:`crfold_images.nvae.config` (this name is that module)."""

from crfold_images.nvae._deprecated import alias

alias(__name__, "crfold_images.nvae.config")
