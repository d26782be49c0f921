"""The result every calibration function returns: value, uncertainty, flag.

Functions in `calibration` are vectorised: scalars in give scalars out
(`float`, `QualityFlag`, `str`), arrays in give arrays out (float arrays, an
int8 array of QARTOD flag codes and an object array of test names). A flag
never changes the value: out-of-limit values are flagged, never clipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from humus.records import QualityFlag

# Severity rank per flag code (QualityFlag.worst's order), as a lookup table.
_RANK = np.zeros(10, dtype=np.int8)
for _f, _r in ((QualityFlag.NOT_EVALUATED, 0), (QualityFlag.PASS, 1), (QualityFlag.SUSPECT, 2),
               (QualityFlag.FAIL, 3), (QualityFlag.MISSING, 4)):
    _RANK[int(_f)] = _r


@dataclass(frozen=True, slots=True)
class Calibrated:
    """A calibrated value (or array), its standard uncertainty and its QARTOD flag.

    `flag_test` names the check that set a non-PASS flag (``""`` when it
    passed), so the collector can copy it into `Observation.flag_test`.
    """

    value: Any
    uncertainty: Any
    flag: Any
    flag_test: Any


class FlagSet:
    """Accumulates the worst flag per element and the name of the test that set it."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.flag = np.full(shape, int(QualityFlag.PASS), dtype=np.int8)
        self.test = np.full(shape, "", dtype=object)

    def raise_where(self, mask: Any, flag: QualityFlag, test: str) -> None:
        """Set `flag` (named `test`) where `mask` holds and it is worse than the current flag."""
        mask = np.broadcast_to(np.asarray(mask, dtype=bool), self.flag.shape)
        worse = mask & (_RANK[self.flag] < _RANK[int(flag)])
        self.flag[worse] = int(flag)
        self.test[worse] = test


def finish(value: np.ndarray, uncertainty: np.ndarray, flags: FlagSet, scalar: bool) -> Calibrated:
    """Package arrays as a `Calibrated`, unwrapping to Python scalars for scalar input."""
    if scalar:
        return Calibrated(float(value.reshape(-1)[0]), float(np.asarray(uncertainty).reshape(-1)[0]),
                          QualityFlag(int(flags.flag.reshape(-1)[0])), str(flags.test.reshape(-1)[0]))
    return Calibrated(value, np.broadcast_to(uncertainty, value.shape).copy(), flags.flag, flags.test)


def as_array(x: Any) -> tuple[np.ndarray, bool]:
    """A float array from `x`, and whether `x` was a scalar."""
    a = np.asarray(x, dtype=float)
    return np.atleast_1d(a), a.ndim == 0
