"""Admission of one MQTT message: a valid `Batch`, or a `WireError` with its reason.

The wire contract itself (schema, topic/payload identity, NaN/inf, future
timestamps, size) lives in `humus.wire.decode_batch`; this module adds the
ingest side's own rules, checked before the payload is parsed (an unknown
publisher's content is not worth the CPU):

- a registry of known gateways: `[ingest] gateways` (a list) or
  `[ingest] registry_file` (`humus gateway add` keeps it, with each
  gateway's public key; re-read when it changes, so a new gateway needs no
  restart of ingest);
- signatures (humus.signing): a gateway with a registered key must sign,
  and its signature must verify; the signature is cut off before decoding.
  A verified batch is marked (`Batch.signed`, and its observations:
  humus.obsrows `mark_signed`) so the stores keep the verification with
  each value (docs/wire.md, "Signed batches");
- an optionally lower size limit.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

from humus.obsrows import mark_signed
from humus.signing import SignatureError, Verifier, load_registry, split_signed
from humus.wire import Batch, Rejection, WireError, decode_batch, parse_obs_topic

REGISTRY_CHECK_S = 5.0
"""How often the registry file's modification time is looked at."""


class Validator:
    """Decide, without raising anything but `WireError`, whether a message is admitted."""

    def __init__(self, *, gateways: tuple[str, ...] | None = None, max_future_s: float = 600.0,
                 max_message_bytes: int | None = None, registry_file: str | Path | None = None) -> None:
        self.static = frozenset(tuple(g.split("/", 1)) for g in gateways) if gateways is not None else None
        self.registry = self.static
        self.max_future_s = max_future_s
        self.max_message_bytes = max_message_bytes
        self.registry_file = Path(registry_file) if registry_file else None
        self.verifier = Verifier({})
        self._registry_mtime: float | None = None
        self._registry_checked = float("-inf")
        self.registry_error: str | None = None
        if self.registry_file is not None:
            self.reload()

    def reload(self) -> None:
        """Read the registry file again if it changed; keep the last good one when it is broken."""
        self._registry_checked = time.monotonic()
        assert self.registry_file is not None
        try:
            mtime = os.stat(self.registry_file).st_mtime
        except OSError as e:
            self.registry_error = f"{self.registry_file}: {e.strerror}"
            return
        if mtime == self._registry_mtime:
            return
        try:
            keys = load_registry(self.registry_file)
        except ValueError as e:
            self.registry_error = str(e)
            return
        self._registry_mtime = mtime
        self.registry_error = None
        self.verifier = Verifier(keys)
        self.registry = frozenset(keys) | (self.static or frozenset())

    def check(self, topic: str, payload: bytes, *, now_ns: int | None = None) -> Batch:
        if self.max_message_bytes is not None and len(payload) > self.max_message_bytes:
            raise WireError(Rejection.TOO_LARGE, f"payload of {len(payload)} bytes exceeds {self.max_message_bytes}")
        if self.registry_file is not None and time.monotonic() - self._registry_checked >= REGISTRY_CHECK_S:
            self.reload()
        signed = False
        if self.registry is not None or payload.rfind(b',"ed25519":"') >= 0:
            site, gateway = parse_obs_topic(topic)
            if self.registry is not None and (site, gateway) not in self.registry:
                where = "[ingest] gateways" if self.registry_file is None else str(self.registry_file)
                raise WireError(Rejection.UNKNOWN_GATEWAY, f"gateway {site}/{gateway} is not in the registry ({where})")
            try:
                signed = self.verifier.check(site, gateway, payload)
                parts = split_signed(payload)
            except SignatureError as e:
                raise WireError(Rejection.BAD_SIGNATURE, f"{site}/{gateway}: {e}") from None
            if parts is not None:
                payload = parts[0]
        batch = decode_batch(topic, payload, now_ns=now_ns, max_future_s=self.max_future_s)
        if not signed:
            return batch
        return dataclasses.replace(batch, observations=mark_signed(batch.observations), signed=True)
