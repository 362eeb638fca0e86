"""Fixtures several test modules share."""

import cv2
import pytest
from skimage.data import astronaut


@pytest.fixture(scope="module")
def photo_file(tmp_path_factory):
    """A real photo of a person on disk (scikit-image's public-domain astronaut, 128 x 128)."""
    path = tmp_path_factory.mktemp("photo") / "astronaut.png"
    cv2.imwrite(str(path), cv2.cvtColor(cv2.resize(astronaut(), (128, 128), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2BGR))
    return path
