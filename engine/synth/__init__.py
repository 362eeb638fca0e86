"""SV3D_p novel-view synthesis: one photo to the latents of views on an orbit around the person."""

from .orbit import orbit_azimuths, orbit_polars, triangle_guidance
from .synthesizer import SV3DSynthesizer, SynthConfig, SynthResult
from .unet import SV3DUNet

__all__ = ["SV3DSynthesizer", "SV3DUNet", "SynthConfig", "SynthResult", "orbit_azimuths", "orbit_polars", "triangle_guidance"]
