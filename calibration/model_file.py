"""Open a spectral model file (.npz) without trusting it.

A model file comes from outside (a colleague, a download, a USB stick): it
may be no zip at all, a zip bomb whose members declare gigabytes (a 3 GiB
array of zeros compresses to 14 MB), a pickle, a description nested
thousands deep, or arrays whose shapes contradict the description. Here
every size is checked from the zip directory and each member's .npy header
(numpy's format, NEP 1) before any array is read, and the description's
depth before it is parsed; `check_model_arrays` then holds the arrays to
the description, so a loaded model can predict. Each failure is one
`ModelFileError` line naming the file and what is wrong.
"""

from __future__ import annotations

import json
import math
import os
import re
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib import format as npy

from humus.file_checks import FileProblem, stat_regular

MAX_FILE_BYTES = 256 << 20
"""A model file larger than 256 MiB on disk is refused (a local-PLS model of 2,000 spectra is about 30 MB)."""
MAX_ARRAY_BYTES = 512 << 20
"""The arrays of one model may declare at most 512 MiB in all (a gateway has 1-4 GB of memory)."""
MAX_EXPANSION = 64
"""Declared array bytes at most this many times the file size (plus 1 MiB): float spectra compress
about 1.1-3x; a larger ratio is a zip bomb of zeros."""
MAX_MEMBERS = 64
MAX_DESCRIPTION_DEPTH = 32
"""JSON description nesting at most this deep (a Humus model uses 4 levels)."""
INPUT_KINDS = ("absorbance", "reflectance", "counts")
_DTYPE_KINDS = "fiubU"     # numbers, booleans and the description's text; never objects (pickle)
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*+"?')    # linear: never fails, never backtracks
_BRACKET = re.compile(r"[\[\]{}]")


class ModelFileError(Exception):
    """A model file that cannot be used; str() is the one line to show."""


def read_model_file(path: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The description and the arrays of a model file, every size checked before it is read."""
    path = Path(path)
    try:
        st = stat_regular(path)
    except FileProblem as e:
        raise ModelFileError(f"{path}: model file {e.reason}") from None
    if st.st_size > MAX_FILE_BYTES:
        raise ModelFileError(f"{path}: {st.st_size} bytes, more than the {MAX_FILE_BYTES} a model file may have")
    budget = min(MAX_ARRAY_BYTES, MAX_EXPANSION * st.st_size + (1 << 20))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise ModelFileError(f"{path}: model file cannot be opened ({e.strerror or e})") from None
    try:
        with os.fdopen(fd, "rb") as f:
            if f.read(4) != b"PK\x03\x04":
                raise ModelFileError(f"{path}: not a Humus model file (expected a .npz archive)")
            f.seek(0)
            with zipfile.ZipFile(f) as zf:
                infos = _members(path, zf)
                total = 0
                for info in infos:
                    total += _declared_bytes(path, zf, info)
                    if total > budget:
                        raise ModelFileError(f"{path}: arrays declare more than {budget} bytes for a file of "
                                             f"{st.st_size} (limit {MAX_ARRAY_BYTES}, at most {MAX_EXPANSION}x the "
                                             "file size): not a model file this gateway can hold")
                arrays = {}
                for info in infos:
                    with zf.open(info) as m:
                        arrays[info.filename[:-4]] = npy.read_array(m, allow_pickle=False)
    except ModelFileError:
        raise
    except (zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError, EOFError, ValueError, OSError) as e:
        raise ModelFileError(f"{path}: not a readable Humus model file (.npz): {type(e).__name__}: "
                             f"{str(e)[:120]}") from None
    meta = _description(path, arrays.pop("meta", None))
    return meta, arrays


def _members(path: Path, zf: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise ModelFileError(f"{path}: {len(infos)} members, a model file has at most {MAX_MEMBERS}")
    names = [i.filename for i in infos]
    if len(set(names)) != len(names) or not all(n.endswith(".npy") and "/" not in n for n in names):
        raise ModelFileError(f"{path}: members must be distinct NAME.npy arrays (numpy .npz), found "
                             f"{', '.join(n[:40] for n in names[:5])}")
    if "meta.npy" not in names:
        raise ModelFileError(f"{path}: no JSON description ('meta') in the model file")
    return infos


def _declared_bytes(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> int:
    """Bytes the member's .npy header declares, checked against the size the zip directory gives it."""
    name = info.filename[:-4]
    with zf.open(info) as m:
        try:
            version = npy.read_magic(m)
            if version == (1, 0):
                shape, _, dtype = npy.read_array_header_1_0(m)
            elif version == (2, 0):
                shape, _, dtype = npy.read_array_header_2_0(m)
            else:
                raise ModelFileError(f"{path}: array {name!r} has .npy format version {version}, expected 1.0 "
                                     "or 2.0")
        except ModelFileError:
            raise
        except Exception as e:  # noqa: BLE001 - numpy parses the header with ast: SyntaxError, TokenError...
            raise ModelFileError(f"{path}: array {name!r} has an unreadable .npy header ({type(e).__name__})") \
                from None
        header = m.tell()
    if dtype.hasobject or dtype.kind not in _DTYPE_KINDS:
        raise ModelFileError(f"{path}: array {name!r} has dtype {dtype.str} (Python objects are refused: "
                             "no pickle in model files)")
    declared = math.prod(shape) * dtype.itemsize
    if declared != info.file_size - header:
        raise ModelFileError(f"{path}: array {name!r} declares {declared} bytes of data "
                             f"(shape {tuple(shape)}, {dtype.str}), the archive holds {info.file_size - header}")
    return declared


def _description(path: Path, raw: np.ndarray | None) -> dict[str, Any]:
    if raw is None or raw.shape != () or raw.dtype.kind != "U":
        raise ModelFileError(f"{path}: no valid JSON description ('meta') in the model file")
    text = str(raw)
    depth = deepest = 0
    for m in _BRACKET.finditer(_JSON_STRING.sub('""', text)):   # json.loads recurses once per level
        depth += 1 if m.group() in "[{" else -1
        deepest = max(deepest, depth)
    if deepest > MAX_DESCRIPTION_DEPTH:
        raise ModelFileError(f"{path}: description nested {deepest} levels deep, at most "
                             f"{MAX_DESCRIPTION_DEPTH} expected")
    try:
        meta = json.loads(text)
    except (ValueError, RecursionError):
        raise ModelFileError(f"{path}: no valid JSON description ('meta') in the model file") from None
    if not isinstance(meta, dict):
        raise ModelFileError(f"{path}: the description is not a JSON object")
    return meta


def check_model_arrays(path: str | Path, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """The arrays have the shapes, types and values the description promises (p bands, k components)."""
    def fail(what: str) -> ModelFileError:
        return ModelFileError(f"{path}: inconsistent model: {what}")

    kind = meta.get("input")
    if kind not in INPUT_KINDS:
        raise fail(f"input {kind!r}, expected one of {', '.join(INPUT_KINDS)}")
    pls = meta.get("pls")
    k = pls.get("n_components") if isinstance(pls, dict) else None
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise fail(f"pls.n_components {k!r}, expected a whole number >= 1")
    grid = arrays.get("wavelengths_nm")
    if grid is None or grid.ndim != 1 or grid.shape[0] < 2:
        raise fail("array 'wavelengths_nm' missing or not a list of at least 2 wavelengths")
    p = grid.shape[0]
    bands = meta.get("bands", p)
    if bands != p:
        raise fail(f"{p} wavelengths, the description says {bands!r} bands")
    shapes: dict[str, tuple[int | None, ...]] = {
        "wavelengths_nm": (p,), "x_mean": (p,), "weights": (p, k), "loadings": (p, k), "rotations": (p, k),
        "y_loadings": (k,), "score_var": (k,)}
    if meta.get("epo"):
        shapes["epo_directions"] = (p, None)
    if meta.get("local"):
        shapes["library_x"], shapes["library_y"] = (None, p), (None,)
    unc = meta.get("uncertainty")
    if isinstance(unc, dict) and unc.get("neighbours"):
        shapes["uncertainty_scores"], shapes["uncertainty_errors"] = (None, k), (None,)
    for name, want in shapes.items():
        a = arrays.get(name)
        if a is None:
            raise fail(f"array {name!r} missing")
        if a.ndim != len(want) or any(w is not None and w != s for w, s in zip(want, a.shape)):
            shown = "(" + ", ".join("n" if w is None else str(w) for w in want) + ")"
            raise fail(f"array {name!r} has shape {a.shape}, expected {shown} for {p} bands and {k} components")
        if a.dtype.kind not in "fiu" or not np.isfinite(a).all():
            raise fail(f"array {name!r} must hold finite numbers")
    if "library_x" in shapes and arrays["library_x"].shape[0] != arrays["library_y"].shape[0]:
        raise fail("arrays 'library_x' and 'library_y' hold different numbers of samples")
    if "uncertainty_scores" in shapes and \
            arrays["uncertainty_scores"].shape[0] != arrays["uncertainty_errors"].shape[0]:
        raise fail("arrays 'uncertainty_scores' and 'uncertainty_errors' hold different numbers of samples")
    if np.any(np.diff(grid) <= 0):
        raise fail("wavelengths must increase strictly")
    if not np.all(arrays["score_var"] > 0):
        raise fail("array 'score_var' must be positive")
