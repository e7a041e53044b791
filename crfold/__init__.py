"""crfold: consistency-regularized VAEs for 3D point clouds (and images, in crfold_images)."""

__version__ = "0.1.0"
