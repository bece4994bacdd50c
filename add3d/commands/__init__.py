"""The ``add3d`` sub-commands: one thin module per command, listed in :data:`add3d.cli.COMMANDS`.

Each module has ``add_arguments(parser)`` and ``run(args) -> int`` and only parses, calls library
functions and prints. Commands that need PyTorch import their engine module inside ``run`` (one
import statement), so that ``add3d --help`` and the torch-free commands start in a fraction of a
second instead of the 1.3 s that importing torch costs.
"""
