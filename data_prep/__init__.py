"""data_prep: raw mesh collections -> the point-cloud HDF5 layout read by :mod:`crfold.data`."""
