"""The file formats shared by the compiler and the runtime: named fields, no torch, no IR.

The compiler writes these files and the runtime reads them, so both import their data model
from here (and never one from the other): `hatch_table` (the hatching tables,
`hatch/<member>.json`) and `share_plan` (the `STEPS` layout of a generated `shared.py`).
Nothing here imports torch, `mncompile.ir` or `mncompile.passes`.
"""
