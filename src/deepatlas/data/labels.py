"""Label schemes: which label-map codes make which training class.

A label-map file (the format of ``ixi-2mm/brain31.json``)::

    {"background": 0,
     "classes": [{"index": 1, "name": "Cortex-L", "source_codes": [101, 103]}, ...]}

Class indices run 1..K without gaps; class 0 is background. A code listed under
no class is *unknown*: by default an error, or background when the user sets
``unknown="background"``. Without a file, the classes are the sorted codes found
in the label maps (code 0 is background).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deepatlas.data.errors import DataError
from deepatlas.options import UNKNOWN_LABELS, look_up_option


@dataclass
class LabelScheme:
    """Mapping from label-map codes to class indices ``0..K`` and back.

    Attributes:
        names: class names, ``names[0]`` is background.
        codes: per class, the label-map codes merged into it (``codes[0]`` is the background codes).
    """

    names: list[str]
    codes: list[list[int]]
    _lookup: dict[int, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.names) != len(self.codes):
            raise ValueError("names and codes must have one entry per class")
        self._lookup = {}
        for index, class_codes in enumerate(self.codes):
            for code in class_codes:
                if code in self._lookup:
                    raise DataError(
                        f"label code {code} is listed under two classes "
                        f"({self.names[self._lookup[code]]!r} and {self.names[index]!r})"
                    )
                self._lookup[int(code)] = index

    @property
    def num_classes(self) -> int:
        """Number of classes including background (``K + 1``)."""
        return len(self.names)

    @classmethod
    def from_file(cls, path: str | Path) -> LabelScheme:
        path = Path(path)
        try:
            spec = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise DataError(f"{path}: cannot read label-map file: {err}") from None
        try:
            return cls.from_dict(spec)
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"{path}: invalid label-map file: {err}") from None

    @classmethod
    def from_dict(cls, spec: dict) -> LabelScheme:
        entries = sorted(spec["classes"], key=lambda c: int(c["index"]))
        indices = [int(c["index"]) for c in entries]
        if indices != list(range(1, len(entries) + 1)):
            raise ValueError(f"class indices must be 1..K without gaps, got {indices}")
        background = spec.get("background", 0)
        background_codes = [int(c) for c in (background if isinstance(background, list) else [background])]
        names = [spec.get("background_name", "background")] + [str(c["name"]) for c in entries]
        codes = [background_codes] + [[int(x) for x in c["source_codes"]] for c in entries]
        return cls(names, codes)

    @classmethod
    def from_codes(cls, codes: Iterable[int]) -> LabelScheme:
        """One class per code found; code 0 is background."""
        found = sorted({int(c) for c in codes} - {0})
        return cls(["background"] + [f"label-{c}" for c in found], [[0]] + [[c] for c in found])

    def to_dict(self) -> dict:
        return {
            "background": self.codes[0],
            "background_name": self.names[0],
            "classes": [
                {"index": i, "name": n, "source_codes": c}
                for i, (n, c) in enumerate(zip(self.names, self.codes))
                if i > 0
            ],
        }

    def encode(self, codes: np.ndarray, source: str = "label map", unknown: str = "error") -> np.ndarray:
        """Map an array of label codes to class indices (``uint8`` up to 255 classes, else ``int16``).

        Raises:
            DataError: naming ``source`` and the codes, when a code is unknown and ``unknown == "error"``.
        """
        look_up_option(unknown, UNKNOWN_LABELS, "unknown labels")
        values, inverse = np.unique(codes, return_inverse=True)
        mapped = np.array([self._lookup.get(int(v), -1) for v in values], dtype=np.int64)
        missing = values[mapped < 0]
        if missing.size and unknown == "error":
            shown = ", ".join(str(int(v)) for v in missing[:20]) + (" ..." if missing.size > 20 else "")
            raise DataError(
                f"{source}: label codes not in the label-map file: {shown}. Add them to a class, or map them "
                f"to background: --unknown-labels background (every command reading label maps has it; in a "
                f"config: data.unknown_labels: background)."
            )
        mapped[mapped < 0] = 0
        dtype = np.uint8 if self.num_classes <= 256 else np.int16
        return mapped[inverse].reshape(codes.shape).astype(dtype)

    def mirrored(self) -> list[int]:
        """Per class index, the index of its mirror image: a left structure's right twin and back
        (``Hippocampus-L`` / ``Hippocampus-R``, ``Left-Hippocampus`` / ``Right-Hippocampus``, ``lh`` / ``rh``),
        the class itself where the name says no side (a midline structure) or its twin is missing
        (:meth:`unpaired`)."""
        index = {name: k for k, name in enumerate(self.names)}
        return [index.get(_other_side(name), k) for k, name in enumerate(self.names)]

    def unpaired(self) -> list[str]:
        """Names that say a side but whose twin on the other side is not in the scheme (``Caudate-L`` without
        ``Caudate-R``): mirrored, such a structure would keep a side it no longer has."""
        return [name for name in self.names if _other_side(name) != name and _other_side(name) not in self.names]

    def sides(self) -> list[str | None]:
        """Per class index, the side its name says, ``"left"`` or ``"right"`` (by the same side words as
        :meth:`mirrored`), or None (background, midline structures, names that are codes)."""
        found = [_SIDE.search(name) for name in self.names]
        return [None if m is None else ("left" if m.group(0) in _LEFT_WORDS else "right") for m in found]

    def decode(self, classes: np.ndarray) -> np.ndarray:
        """Map class indices back to label codes (each class to its first code)."""
        table = np.array([c[0] for c in self.codes], dtype=np.int32)
        return table[classes.astype(np.int64)]


_SIDES = {"L": "R", "R": "L", "Left": "Right", "Right": "Left", "left": "right", "right": "left"}
_SIDES.update({"LEFT": "RIGHT", "RIGHT": "LEFT", "lh": "rh", "rh": "lh"})
_LEFT_WORDS = frozenset({"L", "Left", "left", "LEFT", "lh"})
_SIDE = re.compile(
    r"(?<![A-Za-z])(LEFT|RIGHT|Left|Right|left|right|lh|rh)(?![a-z])"  # a word: Left-Hippocampus, ctx-lh-insula
    r"|(?<![A-Za-z0-9])(L|R)(?![A-Za-z0-9])"  # a letter alone: Hippocampus-L, Amygdala_R (not L1, not ROI)
)


def _other_side(name: str) -> str:
    """``name`` with each side word (a whole word: ``L``, ``Left``, ``lh``, ...) turned to the other side."""
    return _SIDE.sub(lambda m: _SIDES[m.group(0)], name)
