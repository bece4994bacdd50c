"""Command-line front-ends of the engine: ``add3d train | eval | predict | export-submission``."""
