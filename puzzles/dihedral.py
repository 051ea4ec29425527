"""The 8 dihedral transforms of a grid, numbered exactly as the official ARC builder numbers them.

0 identity, 1 rot90, 2 rot180, 3 rot270 (numpy's counter-clockwise ``rot90``), 4 fliplr, 5 flipud,
6 transpose, 7 fliplr(rot90) (the anti-transpose). Augmented puzzle names carry these ids, so the
numbering has to match for de-augmenting official predictions.
"""

from __future__ import annotations

import numpy as np

DIHEDRAL_INVERSE: tuple[int, ...] = (0, 3, 2, 1, 4, 5, 6, 7)


def dihedral(grid: np.ndarray, t: int) -> np.ndarray:
    """Apply transform ``t`` (0..7) to the last two axes of ``grid``; returns a contiguous copy."""
    a = np.asarray(grid)
    if t == 0:
        out = a
    elif t in (1, 2, 3):
        out = np.rot90(a, k=t, axes=(-2, -1))
    elif t == 4:
        out = np.flip(a, axis=-1)
    elif t == 5:
        out = np.flip(a, axis=-2)
    elif t == 6:
        out = np.swapaxes(a, -1, -2)
    elif t == 7:
        out = np.flip(np.rot90(a, k=1, axes=(-2, -1)), axis=-1)
    else:
        raise ValueError(f"dihedral transform id must be 0..7, got {t}")
    return np.ascontiguousarray(out)


def inverse_dihedral(grid: np.ndarray, t: int) -> np.ndarray:
    """Undo ``dihedral(grid, t)``."""
    return dihedral(grid, DIHEDRAL_INVERSE[t])
