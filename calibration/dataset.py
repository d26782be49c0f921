"""Read a spectral library CSV: one row per sample, property columns, then one column per wavelength.

The layout of shared/data/nirsoil/ (and soilspec-epo/): a header whose
wavelength columns are named by their value in nm; other columns are sample
properties (numbers, or text such as ``state``). Empty cells are missing.
This is the one place `calibration` reads files other than its own models;
`humus calibrate` uses it.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from humus.file_checks import FileProblem, read_regular

MAX_CSV_BYTES = 1 << 30
"""A spectral library CSV of at most 1 GiB (the NIRsoil library is 3 MB; LUCAS 2009 about 700 MB)."""


class DatasetError(Exception):
    """A CSV that cannot be used; str() is the one line to show (file, line, expectation)."""


@dataclass(frozen=True)
class SpectralDataset:
    path: Path
    wavelengths_nm: np.ndarray          # (p,)
    spectra: np.ndarray                 # (n, p), NaN where empty
    columns: dict[str, list[str]]       # property columns as text, one entry per row
    lines: tuple[int, ...] = ()         # the line of the file each row ends on (for messages)

    def __len__(self) -> int:
        return int(self.spectra.shape[0])

    def numeric(self, column: str) -> np.ndarray:
        """A property column as floats (NaN where empty); DatasetError naming the first bad cell."""
        if column not in self.columns:
            raise DatasetError(f"{self.path}: no column {column!r}; property columns are "
                               f"{', '.join(self.columns) or '(none)'}")
        out = np.empty(len(self))
        for i, text in enumerate(self.columns[column]):
            try:
                out[i] = float(text) if text.strip() else math.nan
            except ValueError:
                line = self.lines[i] if i < len(self.lines) else i + 2
                raise DatasetError(f"{self.path}: line {line}, column {column!r}: expected a number, "
                                   f"got {text[:40]!r}") from None
        return out

    def subset(self, mask: np.ndarray) -> "SpectralDataset":
        idx = np.flatnonzero(mask)
        return SpectralDataset(self.path, self.wavelengths_nm, self.spectra[idx],
                               {k: [v[i] for i in idx] for k, v in self.columns.items()},
                               tuple(self.lines[i] for i in idx) if self.lines else ())


def read_spectral_csv(path: str | Path) -> SpectralDataset:
    """Load the CSV; DatasetError (one line: file, line, column) for a bad file, no wavelength columns, a bad cell."""
    path = Path(path)
    try:
        text = read_regular(path, MAX_CSV_BYTES).decode("utf-8")
    except FileProblem as e:
        raise DatasetError(f"{path}: {e.reason}; expected a CSV file") from None
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not a UTF-8 CSV file (byte {e.object[e.start]:#04x} at line "
                           f"{e.object[:e.start].count(10) + 1})") from None
    nul = text.find("\0")
    if nul >= 0:
        raise DatasetError(f"{path}: {_where(text, nul)}: a NUL byte; expected text (a spreadsheet or a damaged "
                           "file rather than a CSV?)")
    reader = csv.reader(io.StringIO(text, newline=""))
    rows, lines = [], []
    try:
        for row in reader:
            rows.append(row)
            lines.append(reader.line_num)
    except csv.Error as e:
        raise DatasetError(f"{path}: line {reader.line_num}: not valid CSV ({e})") from None
    if not rows:
        raise DatasetError(f"{path}: empty file, expected a header row and one row per sample")
    header = [h.strip() for h in rows[0]]
    wl_idx, wl, props = [], [], []
    for j, name in enumerate(header):
        try:
            value = float(name)
        except ValueError:
            props.append(j)
            continue
        wl_idx.append(j)
        wl.append(value)
    if not wl_idx:
        raise DatasetError(f"{path}: no wavelength columns; expected columns named by their wavelength "
                           f"in nm (e.g. 1100, 1102, ...)")
    wl_arr = np.asarray(wl)
    if np.any(np.diff(wl_arr) <= 0):
        raise DatasetError(f"{path}: wavelength columns must increase from left to right")
    data = rows[1:]
    if not data:
        raise DatasetError(f"{path}: no sample rows after the header")
    spectra = np.full((len(data), len(wl_idx)), np.nan)
    columns: dict[str, list[str]] = {header[j]: [] for j in props}
    for i, row in enumerate(data):
        if len(row) != len(header):
            raise DatasetError(f"{path}: line {lines[i + 1]}: {len(row)} cells, expected {len(header)} as in the "
                               "header")
        for j in props:
            columns[header[j]].append(row[j])
        try:
            spectra[i] = [float(row[j]) if row[j].strip() else math.nan for j in wl_idx]
        except ValueError:
            bad = next(j for j in wl_idx if row[j].strip() and not _is_float(row[j]))
            raise DatasetError(f"{path}: line {lines[i + 1]}, column {header[bad]!r}: expected a number, "
                               f"got {row[bad][:40]!r}") from None
    return SpectralDataset(path, wl_arr, spectra, columns, tuple(lines[1:]))


def _where(text: str, at: int) -> str:
    """'line L, column C ('name')' of character `at`, for a message."""
    start = text.rfind("\n", 0, at) + 1
    line = text.count("\n", 0, at) + 1
    column = len(next(csv.reader([text[start:at] + "x"]), [""]))
    header = next(csv.reader([text[:text.find("\n")] if "\n" in text else text]), [])
    name = f" ({header[column - 1].strip()[:40]!r})" if line > 1 and column <= len(header) else ""
    return f"line {line}, column {column}{name}"


def _is_float(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False
