"""Deployment: ONNX export of a detector's network and running it with onnxruntime."""
