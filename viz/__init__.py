"""viz: Open3D latent-interpolation viewer and rendered figures (optional extra ``crfold[viz]``)."""
