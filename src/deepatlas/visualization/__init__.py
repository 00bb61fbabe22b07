"""Rendering results to PNG."""

from deepatlas.visualization.slices import save_figure, save_panels

__all__ = ["save_figure", "save_panels"]
