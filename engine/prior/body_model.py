"""The body models the prior can fit, behind one small interface.

Every model answers in one *body frame*, the world convention of splatcast: metres, y up, the
body facing +z with its left side on +x, soles on y = 0 and the pelvis on the y axis. Poses are
reduced to what a single front photo pins down and the reconstruction needs: how far each arm
hangs down from the model's rest pose.

Fitting evaluates the mesh hundreds of times, so ``vertices`` does not run the body model: for
linear blend skinning (pose correctives included, as SMPL's are linear in rotation-matrix
entries) turning one bone subtree by an angle a about a fixed axis moves every vertex along
c0 + c1 cos(a) + c2 sin(a), and the two arms' subtrees are disjoint, so three evaluations per
arm give the exact mesh at any pair of angles.
"""

from __future__ import annotations

import math
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
    _arm_basis: torch.Tensor | None = None

    @abstractmethod
    def posed(self, arm_angles: torch.Tensor) -> torch.Tensor:
        """The model's own evaluation: vertices (V, 3) float64 in the body frame for arm angles (2,).

        An angle of 0 keeps the rest pose; positive angles lower the arm towards the body.
        """

    def vertices(self, arm_angles: torch.Tensor) -> torch.Tensor:
        """``posed`` in closed form (see the module docstring): float32, differentiable, cheap."""
        if self._arm_basis is None:
            self._arm_basis = self._fit_arm_basis()
        if self._arm_basis.device != arm_angles.device:
            self._arm_basis = self._arm_basis.to(arm_angles.device)
        rest, left_cos, left_sin, right_cos, right_sin = self._arm_basis
        cos, sin = arm_angles.double().cos(), arm_angles.double().sin()
        return (rest + left_cos * cos[0] + left_sin * sin[0] + right_cos * cos[1] + right_sin * sin[1]).float()

    def _fit_arm_basis(self) -> torch.Tensor:
        half_pi = math.pi / 2
        with torch.no_grad():
            at = {(l, r): self.posed(torch.tensor([l, r], dtype=torch.float64)) for l, r in ((0, 0), (half_pi, 0), (-half_pi, 0), (0, half_pi), (0, -half_pi))}
        left_sin = (at[half_pi, 0] - at[-half_pi, 0]) / 2
        right_sin = (at[0, half_pi] - at[0, -half_pi]) / 2
        left_cos = at[0, 0] - (at[half_pi, 0] + at[-half_pi, 0]) / 2
        right_cos = at[0, 0] - (at[0, half_pi] + at[0, -half_pi]) / 2
        # V(l, r) = V(l, 0) + V(0, r) - V(0, 0), and V(a, 0) = C + left_cos cos(a) + left_sin sin(a).
        rest = at[0, 0] - left_cos - right_cos
        return torch.stack([rest, left_cos, left_sin, right_cos, right_sin])


def soles_to_origin(vertices: torch.Tensor, pelvis: torch.Tensor) -> torch.Tensor:
    """The offset that puts the lowest vertex on y = 0 and the pelvis on the y axis."""
    return torch.stack([-pelvis[0], -vertices[:, 1].min(), -pelvis[2]])
