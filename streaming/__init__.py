"""The WebRTC server: sessions, the pose protocol, encoders and the web client."""
