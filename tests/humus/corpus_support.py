"""Helpers shared by the bad-input corpus tests: run `humus` in process, make model and PEM files.

A module of its own (not conftest.py), as in tests/collector/collector_support.py.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import numpy as np

from humus.cli import main


def humus(capsys, *argv: str) -> tuple[int, str, str]:
    """Run `humus ARGV` in this process: (exit status, stdout, stderr)."""
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def one_line_after_prefix(err: str, command: str) -> str:
    """The message of a one-line error, without its 'humus COMMAND: ' prefix; AssertionError otherwise."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}: {err[:500]!r}"
    assert "Traceback" not in err
    prefix = f"humus {command}: "
    assert lines[0].startswith(prefix), lines[0]
    return lines[0][len(prefix):]


def fit_small_model(path: Path, first_nm: float = 1350.0, last_nm: float = 2500.0, bands: int = 64) -> Path:
    """A small, valid spectral model file on `first_nm`-`last_nm` (fitted on synthetic spectra, a second)."""
    from calibration.model import fit_spectral_model

    rng = np.random.default_rng(3)
    wl = np.linspace(first_nm, last_nm, bands)
    y = rng.uniform(0.5, 4.0, 40)
    x = 0.3 + 0.05 * y[:, None] * np.sin(wl / 150.0)[None, :] + rng.normal(0, 0.002, (40, bands))
    model = fit_spectral_model(wl, x, y, model_id="test-soc", input="reflectance", max_components=4, folds=4,
                               preprocessing=[{"op": "savgol", "window": 7, "polyorder": 2, "deriv": 1}])
    model.save(path)
    return path


def self_signed(directory: Path) -> tuple[Path, Path]:
    """(certificate, private key) PEM files, the key mode 0600."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "humus-test")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    crt, pem = directory / "client.crt", directory / "client.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    os.chmod(pem, 0o600)
    return crt, pem
