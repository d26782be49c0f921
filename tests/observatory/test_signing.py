"""Signed batches: a gateway signs, ingest verifies against the registry, forgeries are dead-lettered.

Real Mosquitto, a real ingest worker, the SQLite archive; batches signed by
the gateway's own spool code (collector.spool.Spool with a signer).
"""

from __future__ import annotations

import json

import pytest

from collector.spool import Spool
from humus.records import Observation, QualityFlag
from humus.signing import SignatureError, Verifier, new_key_pair, registry_line, sign_payload, split_signed
from humus.wire import encode_batch, obs_topic
from observatory.deadletter import BatchLedger, DeadLetters
from observatory.stores.sqlite import SqliteStore
from observatory.worker import IngestWorker
from test_ingest import Publisher, T0, batch, config, running, wait_for

pytestmark = [pytest.mark.timeout(120)]


def _signer(pem: bytes, tmp_path, name: str):
    from humus.signing import signer_from_file

    path = tmp_path / f"{name}.key"
    path.write_bytes(pem)
    path.chmod(0o600)
    return signer_from_file(path)


def _signed_batches(tmp_path, site: str, gw: str, sign, n: int) -> list[bytes]:
    """Batches formed by the gateway's spool with its signer, as they would be published."""
    sp = Spool(tmp_path / f"{gw}.spool", site=site, gateway=gw, quota_bytes=10**8, sign=sign)
    for i in range(n):
        sp.append([Observation(site=site, gateway=gw, probe="p", quantity="vwc", time_ns=T0 + i * 10**9,
                               value=0.2 + i / 100, unit="m3/m3", flag=QualityFlag.PASS)])
    out = []
    while (b := sp.form_batch(max_obs=1, max_bytes=65536)) is not None:
        out.append(b.payload)
    sp.close()
    return out


def test_a_signature_covers_every_byte_and_a_resend_carries_the_same_one(tmp_path):
    pem, public = new_key_pair()
    sign = _signer(pem, tmp_path, "gw")
    unsigned = encode_batch("farm-1", "gw-1", 1, [Observation(site="farm-1", gateway="gw-1", probe="p",
                                                              quantity="vwc", time_ns=T0, value=0.2, unit="m3/m3")])
    signed = sign_payload(unsigned, sign)
    assert json.loads(signed)["seq"] == 1 and split_signed(signed)[0] == unsigned
    v = Verifier({("farm-1", "gw-1"): public})
    assert v.check("farm-1", "gw-1", signed) is True
    with pytest.raises(SignatureError, match="does not verify"):
        v.check("farm-1", "gw-1", signed.replace(b"0.2", b"0.3"))
    with pytest.raises(SignatureError, match="not signed"):
        v.check("farm-1", "gw-1", unsigned)
    assert v.check("farm-1", "gw-9", unsigned) is False     # no key registered: accepted unverified
    a, b = _signed_batches(tmp_path, "farm-1", "gw-1", sign, 2)
    assert v.check("farm-1", "gw-1", a) and v.check("farm-1", "gw-1", b)


@pytest.mark.servers
def test_ingest_verifies_signatures_and_dead_letters_forgeries(tmp_path, mosquitto):
    pem1, pub1 = new_key_pair()
    pem2, pub2 = new_key_pair()
    sign1, sign2 = _signer(pem1, tmp_path, "gw1"), _signer(pem2, tmp_path, "gw2")
    registry = tmp_path / "gateways.toml"
    registry.write_text(registry_line("farm-1", "gw-1", pub1) + registry_line("farm-1", "gw-2", pub2)
                        + registry_line("farm-1", "gw-3", ""))
    path = tmp_path / "archive.sqlite"
    good = _signed_batches(tmp_path, "farm-1", "gw-1", sign1, 3)
    # gw-1's batch 1, rewritten to say gw-2 and re-signed with gw-1's key: a replay under another name.
    replay = sign_payload(split_signed(good[0])[0].replace(b'"gw-1"', b'"gw-2"'), sign1)
    forged = sign_payload(split_signed(good[1])[0], sign2)          # gw-1's data, gw-2's key
    unsigned = split_signed(good[2])[0]
    pub = Publisher(mosquitto.port)
    cfg = config(mosquitto.port, f"sqlite:{path}", registry_file=str(registry))
    with SqliteStore(path) as store, running(IngestWorker(cfg, store)) as w:
        topic1, topic2 = obs_topic("farm-1", "gw-1"), obs_topic("farm-1", "gw-2")
        pub.send_many([(topic1, good[0]), (topic2, replay), (topic1, forged), (topic1, unsigned),
                       (obs_topic("farm-1", "gw-3"), batch("farm-1", "gw-3", 1)),          # registered, no key
                       (obs_topic("farm-9", "gw-1"), batch("farm-9", "gw-1", 1)),          # not registered
                       (topic1, good[1]), (topic1, good[2])])
        wait_for(lambda: w.metrics.messages_acked >= 8, 30, "every message handled")
    letters = DeadLetters(tmp_path / "archive.sqlite.ingest.sqlite")
    reasons = sorted(d.reason for d in letters.recent())
    letters.close()
    assert reasons == ["bad_signature", "bad_signature", "bad_signature", "unknown_gateway"]
    ledger = BatchLedger(tmp_path / "archive.sqlite.ingest.sqlite")
    try:
        assert ledger.ranges("farm-1", "gw-1") == [(1, 3)]
        assert ledger.verified_ranges("farm-1", "gw-1") == [(1, 3)]
        assert ledger.ranges("farm-1", "gw-3") == [(1, 1)] and ledger.verified_ranges("farm-1", "gw-3") == []
        assert ledger.ranges("farm-1", "gw-2") == []
    finally:
        ledger.close()
    pub.close()


@pytest.mark.servers
def test_a_seq_that_jumps_absurdly_is_refused(tmp_path, mosquitto):
    path = tmp_path / "archive.sqlite"
    pub = Publisher(mosquitto.port)
    with SqliteStore(path) as store, running(IngestWorker(config(mosquitto.port, f"sqlite:{path}",
                                                                 max_seq_jump=1000), store)) as w:
        t = obs_topic("farm-1", "gw-1")
        huge = batch("farm-1", "gw-1", 6).replace(b'"seq":6', b'"seq":%d' % 2**62)
        pub.send_many([(t, batch("farm-1", "gw-1", 5)), (t, huge),
                       (t, batch("farm-1", "gw-1", 900)), (t, batch("farm-1", "gw-1", 5000))])
        wait_for(lambda: w.metrics.messages_acked >= 4, 30, "every message handled")
        assert dict(w.metrics.rejected) == {"seq_jump": 2}
    pub.close()


def test_the_gateway_configuration_refuses_a_signing_key_others_can_read(tmp_path):
    from humus.config import ConfigError
    from collector.config import load_gateway_config

    pem, _ = new_key_pair()
    key = tmp_path / "signing.key"
    key.write_bytes(pem)
    key.chmod(0o644)
    cfg = tmp_path / "gw.toml"
    cfg.write_text(f'[gateway]\nsite = "s1"\nid = "gw1"\ndata_dir = "{tmp_path}"\nclock_check = "epoch"\n'
                   f'signing_key = "{key}"\n')
    with pytest.raises(ConfigError, match="gateway.signing_key.*open to others"):
        load_gateway_config(cfg)
    key.chmod(0o600)
    assert load_gateway_config(cfg).gateway.signing_key == str(key)
    key.write_text("not a key")
    with pytest.raises(ConfigError, match="gateway.signing_key"):
        load_gateway_config(cfg)


def test_provenance_lists_verified_and_unverified_batches(tmp_path):
    import subprocess
    import sys

    from test_ingest import REPO

    state = tmp_path / "state.sqlite"
    ledger = BatchLedger(state)
    ledger.record_batches({("farm-1", "gw-1"): [1, 2, 3, 4, 5], ("farm-1", "gw-2"): [1]},
                          {("farm-1", "gw-1"): [1, 2, 4, 5]})
    ledger.close()
    r = subprocess.run([sys.executable, "-m", "humus.cli", "archive", "provenance", "--state", str(state)],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if x.startswith("farm-1/gw-1 "))
    assert line.split()[1:] == ["5", "4", "3"]
    assert next(x for x in r.stdout.splitlines() if x.startswith("farm-1/gw-2 ")).split()[1:] == ["1", "0", "1"]
    r = subprocess.run([sys.executable, "-m", "humus.cli", "archive", "provenance", "--state", str(tmp_path / "no")],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
