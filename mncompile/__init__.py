"""mncompile: compile `.mnet` ensemble specs into MotherNets training code."""

__version__ = "0.1.0"
