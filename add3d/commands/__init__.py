"""The ``add3d`` sub-commands: one thin module per command, listed in :data:`add3d.cli.COMMANDS`.

Each module has ``add_arguments(parser)`` and ``run(args) -> int`` and only parses, calls library
functions and prints. Commands that need PyTorch (which also means the config: its detector option
sections live in the torch-using detector modules) import their engine modules inside ``run``, one
statement per command, so that ``add3d --help`` and the torch-free commands start in a fraction of
a second instead of the 1.3 s (quiet machine) that importing torch and torchvision costs.
"""
