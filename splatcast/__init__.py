"""splatcast: one photo in, a Gaussian-splat avatar streamed over WebRTC out."""

__version__ = "0.1.0"
