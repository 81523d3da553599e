"""Interactive labs for the course notebooks: widgets that compute, each in a module of its own.

Every lab keeps its numbers in plain functions (tested in ``tests/test_labs_*.py``) and draws them
with ipywidgets; import a lab from its module, e.g. ``from segkit.labs.iou import IoUPainter``.
"""
