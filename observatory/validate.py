"""Admission of one MQTT message: a valid `Batch`, or a `WireError` with its reason.

The wire contract itself (schema, topic/payload identity, NaN/inf, future
timestamps, size) lives in `humus.wire.decode_batch`; this module adds the
ingest side's own rules: a registry of known gateways, checked before the
payload is parsed, and an optionally lower size limit.
"""

from __future__ import annotations

from humus.wire import Batch, Rejection, WireError, decode_batch, parse_obs_topic


class Validator:
    """Decide, without raising anything but `WireError`, whether a message is admitted."""

    def __init__(self, *, gateways: tuple[str, ...] | None = None, max_future_s: float = 600.0,
                 max_message_bytes: int | None = None) -> None:
        self.registry = frozenset(tuple(g.split("/", 1)) for g in gateways) if gateways is not None else None
        self.max_future_s = max_future_s
        self.max_message_bytes = max_message_bytes

    def check(self, topic: str, payload: bytes, *, now_ns: int | None = None) -> Batch:
        if self.max_message_bytes is not None and len(payload) > self.max_message_bytes:
            raise WireError(Rejection.TOO_LARGE, f"payload of {len(payload)} bytes exceeds {self.max_message_bytes}")
        if self.registry is not None:
            # Checked before the payload is parsed: an unknown publisher's
            # content is not worth the CPU.
            site, gateway = parse_obs_topic(topic)
            if (site, gateway) not in self.registry:
                raise WireError(Rejection.UNKNOWN_GATEWAY,
                                f"gateway {site}/{gateway} is not in the registry ([ingest] gateways)")
        return decode_batch(topic, payload, now_ns=now_ns, max_future_s=self.max_future_s)
