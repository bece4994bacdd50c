"""The ``add3d`` sub-commands: one thin module per command, listed in :data:`add3d.cli.COMMANDS`.

Each module has ``add_arguments(parser)`` and ``run(args) -> int`` and only parses, calls library
functions and prints. Modules import what they use at the top: since the data layer's geometry
uses torch, ``add3d --help`` pays for importing torch anyway, and the rest (the add3d modules)
costs ~0.2 s more; torchvision (GUPNet's roi_align, MonoFlex's DeformConv2d) and onnxruntime are
imported where they are used.
"""
