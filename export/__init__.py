"""Optimized inference engines (ONNX, TensorRT, compiled PyTorch) for the reconstruction models."""
