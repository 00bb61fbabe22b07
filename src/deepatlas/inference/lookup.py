"""Lookup tables that name and colour a label map's codes for viewers: ITK-SNAP's label description
file (``labels.txt``: Segmentation > Import Label Descriptions) and 3D Slicer's colour table
(``labels.ctbl``: loaded with the label map, then chosen as its colour node).

One row per code ``segment`` writes: each class of the run's :class:`~deepatlas.data.labels.LabelScheme`
as its first code (:meth:`~deepatlas.data.labels.LabelScheme.decode`), under the class's name. The colour of
class ``k`` depends on ``k`` alone (:func:`class_colour`), so two runs with one label scheme colour alike.
"""

from __future__ import annotations

import colorsys

from deepatlas.data.labels import LabelScheme

GOLDEN = 0.618033988749895
"""Hue step between consecutive classes: the golden ratio's fraction spreads any number of hues
evenly, so neighbouring class indices (often neighbouring structures, left and right) differ."""


def class_colour(index: int) -> tuple[int, int, int]:
    """The RGB colour (0..255) of class ``index``: black for background (0), else a hue stepped by
    :data:`GOLDEN`, alternating two saturation/brightness levels so that close hues still differ."""
    if index == 0:
        return (0, 0, 0)
    hue = (index * GOLDEN) % 1.0
    saturation, value = (0.75, 0.95) if index % 2 else (0.55, 0.8)
    return tuple(round(255 * c) for c in colorsys.hsv_to_rgb(hue, saturation, value))


def table_rows(scheme: LabelScheme) -> list[tuple[int, str, tuple[int, int, int]]]:
    """``(code, name, rgb)`` per class, background first: the codes ``segment`` writes."""
    return [(codes[0], name, class_colour(k)) for k, (name, codes) in enumerate(zip(scheme.names, scheme.codes))]


ITKSNAP_HEADER = """################################################
# ITK-SnAP Label Description File
# File format:
# IDX   -R-  -G-  -B-  -A--  VIS MSH  LABEL
# Fields:
#    IDX:   Zero-based index
#    -R-:   Red color component (0..255)
#    -G-:   Green color component (0..255)
#    -B-:   Blue color component (0..255)
#    -A-:   Label transparency (0.00 .. 1.00)
#    VIS:   Label visibility (0 or 1)
#    MSH:   Label mesh visibility (0 or 1)
#  LABEL:   Label description
# Written by deepatlas segment: one row per label code of its label maps
################################################
"""


def itksnap_labels(scheme: LabelScheme) -> str:
    """ITK-SNAP's label description file: ``IDX R G B A VIS MSH "LABEL"`` per code; background
    transparent and hidden, as ITK-SNAP's own "Clear Label"."""
    lines = []
    for code, name, (r, g, b) in table_rows(scheme):
        shown = 0 if code == scheme.codes[0][0] else 1
        label = name.replace('"', "'")  # the name is the quoted rest of the line
        lines.append(f'{code:5d} {r:5d} {g:4d} {b:4d} {float(shown):8.2f} {shown:2d} {shown:2d}    "{label}"')
    return ITKSNAP_HEADER + "\n".join(lines) + "\n"


def slicer_colour_table(scheme: LabelScheme) -> str:
    """3D Slicer's colour table: ``index name R G B A`` per code (A 0..255, background transparent);
    names without spaces, which separate the columns."""
    rows = table_rows(scheme)
    lines = ["# Color table file labels.ctbl, written by deepatlas segment", f"# {len(rows)} values"]
    for code, name, (r, g, b) in rows:
        alpha = 0 if code == scheme.codes[0][0] else 255
        lines.append(f"{code} {'_'.join(name.split()) or f'label-{code}'} {r} {g} {b} {alpha}")
    return "\n".join(lines) + "\n"
