"""The body models the prior can fit, behind one small interface.

Every model answers in one *body frame*, the world convention of splatcast: metres, y up, the
body facing +z with its left side on +x, soles on y = 0 and the pelvis on the y axis. Poses are
reduced to what a single front photo pins down and the reconstruction needs: how far each arm
hangs down from the model's rest pose.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch


class BodyModelError(ValueError):
    """A body model cannot be built (missing or malformed model files); the message names them."""


class BodyModel(ABC):
    """A posable body mesh.

    ``faces`` (F, 3) vertex indices; ``head_vertices`` indices of the vertices that move with the
    head; ``arms_down`` the arm angles (radians, left then right) that bring the arms from the
    rest pose to hanging beside the torso, the pose prior of the fit.
    """

    name: str
    faces: torch.Tensor
    head_vertices: torch.Tensor
    arms_down: tuple[float, float]

    @abstractmethod
    def vertices(self, arm_angles: torch.Tensor) -> torch.Tensor:
        """Posed vertices (V, 3) float32 in the body frame; differentiable in ``arm_angles`` (2,).

        An angle of 0 keeps the rest pose; positive angles lower the arm towards the body.
        """


def soles_to_origin(vertices: torch.Tensor, pelvis: torch.Tensor) -> torch.Tensor:
    """The offset that puts the lowest vertex on y = 0 and the pelvis on the y axis."""
    return torch.stack([-pelvis[0], -vertices[:, 1].min(), -pelvis[2]])
