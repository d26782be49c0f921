"""Property tests of the readers that take files from users: TOML configurations and model files.

Whatever the bytes, a reader answers with a value or its one-line error
(`ConfigError`, `ModelFileError`), never another exception, a hang or a
huge allocation. Bounded examples: a few seconds in all.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corpus_support import fit_small_model
from humus.config import ConfigError, read_toml

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

TOML_ALPHABET = st.sampled_from(list('[]{}=."\'\n #,abc019_-+:tfeinfa\\\x00\xe9') + ["\r\n", '"""', "'''", "nan"])

GATEWAY = """\
[gateway]
site = "farm-1"
id = "gw-1"
data_dir = "{d}/data"
clock_check = "epoch"

[[probes]]
id = "teros-a"
driver = "teros12"
port = "{d}/sdi12"
address = "0"
interval_s = 60
options = { crc = true, attempts = 3 }
[probes.calibration.vwc]
model = "polynomial_vwc"
input = "raw_counts"
coefficients = [-0.71, 3.9e-4]
[probes.qc.soil_temp]
gross_range = { fail_span = [-40, 60], suspect_span = [-10, 45] }
flat_line = { suspect_threshold_s = 3600, fail_threshold_s = 7200 }
"""


def _one_line(e: Exception) -> None:
    assert "\n" not in str(e) and "\r" not in str(e), str(e)


@FAST
@given(data=st.binary(max_size=2000) | st.lists(TOML_ALPHABET, max_size=400).map(lambda p: "".join(p).encode(
    "utf-8", "surrogatepass")))
def test_read_toml_gives_a_table_or_one_line(tmp_path, data):
    p = tmp_path / "fuzz.toml"
    p.write_bytes(data)
    try:
        assert isinstance(read_toml(p), dict)
    except ConfigError as e:
        _one_line(e)


@FAST
@given(depth=st.integers(0, 3000), opener=st.sampled_from(["[", "{ a = ", "a."]))
def test_nesting_is_bounded_not_a_recursion_error(tmp_path, depth, opener):
    closer = {"[": "]", "{ a = ": " }", "a.": ""}[opener]
    body = "x = " + opener * depth + "1" + closer * depth if opener != "a." else "a." * depth + "x = 1"
    p = tmp_path / "deep.toml"
    p.write_text(body + "\n")
    try:
        read_toml(p)
        assert depth <= 16
    except ConfigError as e:
        _one_line(e)


@FAST
@given(position=st.integers(0, len(GATEWAY) - 1), junk=st.text(max_size=12), cut=st.booleans())
def test_a_damaged_gateway_file_is_loaded_or_refused_in_one_line(tmp_path, position, junk, cut):
    from collector.config import load_gateway_config

    text = GATEWAY.replace("{d}", str(tmp_path))
    position = min(position, len(text) - 1)
    text = text[:position] + junk + (text[position + 1:] if cut else text[position:])
    p = tmp_path / "gw.toml"
    p.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        load_gateway_config(p)
    except ConfigError as e:
        _one_line(e)


@pytest.fixture(scope="module")
def model_bytes(tmp_path_factory) -> bytes:
    """A valid model, re-saved uncompressed so that flipped bytes reach the .npy headers and the JSON."""
    d = tmp_path_factory.mktemp("model")
    path = fit_small_model(d / "m.npz", bands=32)
    with np.load(path) as z:
        arrays = {k: np.array(z[k]) for k in z.files}
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _load(tmp_path: Path, data: bytes):
    from calibration.model import ModelFileError, SpectralModel

    p = tmp_path / "fuzz.npz"
    p.write_bytes(data)
    try:
        return SpectralModel.load(p)
    except ModelFileError as e:
        _one_line(e)
        return None


@FAST
@given(data=st.data())
def test_a_damaged_model_file_is_loaded_or_refused_in_one_line(tmp_path, model_bytes, data):
    raw = bytearray(model_bytes)
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    model = _load(tmp_path, bytes(raw))
    if model is not None:    # if it loads, it predicts (or says MISSING): never an exception
        model.predict(model.grid, np.linspace(0.2, 0.6, model.grid.shape[0]))


DTYPES = st.sampled_from(["<f8", "<f4", "<i8", "|b1", "<U3", "|O", "<c16", "|V8", ">f8"])
SHAPES = st.lists(st.integers(0, 2**40), max_size=4).map(tuple)


@FAST
@given(members=st.dictionaries(st.sampled_from(["meta", "weights", "wavelengths_nm", "x_mean", "library_x"]),
                               st.tuples(DTYPES, SHAPES, st.integers(0, 256)), min_size=1, max_size=5),
       meta=st.recursive(st.none() | st.integers() | st.text(max_size=5),
                         lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=4), kids,
                                                                                   max_size=3), max_leaves=20))
def test_any_declared_members_are_refused_before_they_are_allocated(tmp_path, members, meta):
    """Random .npy headers (sizes up to 2**160 bytes, pickles, odd dtypes) over a few bytes of data."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, (dtype, shape, n) in members.items():
            header = io.BytesIO()
            np.lib.format.write_array_header_1_0(header, {"descr": dtype, "fortran_order": False, "shape": shape})
            payload = json.dumps(meta).encode("utf-32-le") if name == "meta" and dtype == "<U3" else bytes(n)
            z.writestr(f"{name}.npy", header.getvalue() + payload)
    assert _load(tmp_path, buf.getvalue()) is None
