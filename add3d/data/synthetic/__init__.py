"""Synthetic driving scenes written in the exact KITTI layout (``add3d synth``).

Nobody needs KITTI to run, test or demo the whole pipeline: these frames have a KITTI-like camera
and LiDAR, labels derived from the rendered geometry (so difficulty filtering behaves as on real
data) and exact dense depth for the teacher. Files: ``camera`` (rig and ground), ``scene`` (random
worlds), ``render`` (z-buffer image + depth), ``labels``, ``lidar`` (ray-cast scan), ``generate``
(frames -> files). The docs' figures are in ``add3d.viz.synthetic_figures``, the command in
``add3d.commands.synth``. See docs/SYNTHETIC.md.
"""

from add3d.data.synthetic.generate import SyntheticFrame, generate_dataset, image_size, synthesize_frame

__all__ = ["SyntheticFrame", "generate_dataset", "image_size", "synthesize_frame"]
