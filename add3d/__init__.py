"""add3d: attention-based depth distillation (ADD) for monocular 3D object detection."""

__version__ = "0.1.0"
