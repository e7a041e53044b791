"""data_prep: raw mesh collections -> the point-cloud HDF5 layout read by :mod:`crfold.data`.

Commands (``crfold prepare LAYOUT`` or ``python -m data_prep LAYOUT``): ``shapenet``,
``modelnet``, ``folder``, ``npz``. The same in Python::

    from data_prep import prepare_modelnet
    result = prepare_modelnet("ModelNet40", "data/modelnet40_2048", workers=4)
    print(result.summary())  # result.skipped lists bad meshes with reasons

Pipeline per mesh: trimesh load (scenes flattened, sizes checked before allocating) ->
area-weighted surface sample of ``dense_factor * num_points`` points -> farthest-point sampling
to ``num_points`` -> centre and scale into the unit sphere; seeded per model. Output layout and
resumability: see :mod:`data_prep.output` and :mod:`data_prep.pipeline`.
"""

from .meshes import MeshError, load_mesh
from .npz import convert_npz
from .pipeline import PrepareResult, convert_collection
from .prepare import prepare_folder, prepare_modelnet, prepare_shapenet
from .sampling import SamplingParams, farthest_point_sample, mesh_to_points, sample_surface

prepare_npz = convert_npz

__all__ = [
    "MeshError",
    "PrepareResult",
    "SamplingParams",
    "convert_collection",
    "convert_npz",
    "farthest_point_sample",
    "load_mesh",
    "mesh_to_points",
    "prepare_folder",
    "prepare_modelnet",
    "prepare_npz",
    "prepare_shapenet",
    "sample_surface",
]
