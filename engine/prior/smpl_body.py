"""SMPL, SMPL+H and SMPL-X through ``smplx``, from model files the user supplies.

Their licences forbid redistribution, so splatcast never ships or fetches them: register at
https://smpl.is.tue.mpg.de or https://smpl-x.is.tue.mpg.de, download, and pass the file (or
the folder ``smplx.create`` expects: ``<folder>/<model_type>/<MODEL_TYPE>_<GENDER>.<ext>``).
HumanSplat-compatible checkpoints were trained with SMPL-X body priors.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from .body_model import BodyModel, BodyModelError, soles_to_origin

_EXTENSIONS = {"smpl": "pkl", "smplh": "pkl", "smplx": "npz"}
_SHOULDERS = (16, 17)
"""Left and right shoulder joints; their rotation is body_pose[(joint - 1) * 3 : joint * 3]."""
_HEAD = 15


def smpl_model_file(model_path: str | os.PathLike, model_type: str = "smplx", gender: str = "neutral") -> Path:
    """The model file ``smplx.create`` would open for these arguments."""
    if model_type not in _EXTENSIONS:
        raise BodyModelError(f"model_type must be one of {sorted(_EXTENSIONS)}, got {model_type!r}")
    path = Path(model_path)
    if path.is_dir():
        return path / model_type / f"{model_type.upper()}_{gender.upper()}.{_EXTENSIONS[model_type]}"
    return path


class SmplBody(BodyModel):
    """An SMPL-family model in its rest shape (or ``betas``), arms posed by the fit.

    SMPL's own frame already is the body frame up to the offset (y up, facing +z, left on +x);
    its rest pose is a T-pose, so the arms hang down at about 75 degrees.
    """

    arms_down = (math.radians(75.0), math.radians(75.0))

    def __init__(
        self,
        model_path: str | os.PathLike,
        model_type: str = "smplx",
        gender: str = "neutral",
        betas: torch.Tensor | None = None,
    ) -> None:
        import smplx

        file = smpl_model_file(model_path, model_type, gender)
        if not file.is_file():
            raise BodyModelError(
                f"{model_type.upper()} model file not found: {file}. SMPL-family models cannot be "
                "bundled or downloaded by splatcast; register and download them from "
                "https://smpl.is.tue.mpg.de (SMPL) or https://smpl-x.is.tue.mpg.de (SMPL-X), then pass the file "
                "or its folder"
            )
        try:
            self._model = smplx.create(str(file), model_type=model_type, gender=gender, use_pca=False)
        except Exception as error:  # smplx asserts, unpickles and indexes arrays: any of it can fail
            raise BodyModelError(f"{file} is not a usable {model_type.upper()} model: {error}") from error
        self._model.requires_grad_(False)
        self.name = model_type
        self._betas = None if betas is None else torch.as_tensor(betas, dtype=torch.float32).reshape(1, -1)
        self.faces = torch.as_tensor(self._model.faces.astype("int64"))
        self.head_vertices = torch.nonzero(self._model.lbs_weights.argmax(1) == _HEAD).squeeze(1)
        output = self._forward(torch.zeros(2))
        self._offset = soles_to_origin(output.vertices[0], output.joints[0, 0]).double()

    def _forward(self, arm_angles: torch.Tensor):
        # Lowering is a turn about +z: clockwise for the left arm (on +x), anticlockwise for the right.
        angles = torch.stack([-arm_angles[0], arm_angles[1]]).float()
        slots = torch.tensor([(joint - 1) * 3 + 2 for joint in _SHOULDERS])
        body_pose = torch.zeros(1, self._model.NUM_BODY_JOINTS * 3).index_put((torch.zeros_like(slots), slots), angles)
        return self._model(body_pose=body_pose, betas=self._betas)

    def posed(self, arm_angles: torch.Tensor) -> torch.Tensor:
        return self._forward(arm_angles).vertices[0].double() + self._offset
