"""The FLAME layer: model files, skinning, landmarks on the mesh, UV layout."""

from flamefit.model.flame import FlameModel, FlameOutput, load_flame
from flamefit.model.flame_file import FlameData, read_flame_file
from flamefit.model.landmarks import Landmarks68, MeshLandmarks, load_ringnet_68
from flamefit.model.uv import UVLayout, load_uv_layout

__all__ = [
    "FlameData",
    "FlameModel",
    "FlameOutput",
    "Landmarks68",
    "MeshLandmarks",
    "UVLayout",
    "load_flame",
    "load_ringnet_68",
    "load_uv_layout",
    "read_flame_file",
]
