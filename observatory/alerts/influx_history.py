"""Alert history in InfluxDB, beside the data, so Grafana can draw alerts over the series they are about.

One point per transition in measurement ``humus_alert``: tags ``alertname``,
``severity`` and the subject's labels (site, gateway, probe, depth_cm,
quantity, source, kind, subject); fields ``state`` ("firing"/"resolved"),
``firing`` (1 or 0, to plot), ``value``, ``summary``, ``fingerprint``. The
time is the transition's. Written through the store's own HTTP connection
(v1 ``/write`` or v2 ``/api/v2/write``), so credentials and TLS are the
store URL's (docs/stores.md).
"""

from __future__ import annotations

import math
from typing import Sequence

from observatory.alerts.lifecycle import AlertState, Transition
from observatory.stores.lineprotocol import escape_tag

MEASUREMENT = "humus_alert"


def _string(v: str) -> str:
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") + '"'


def _tag(v: str) -> str | None:
    v = v.replace("\\", "/").replace("\n", " ").replace("\r", " ")
    return escape_tag(v) if v else None


def lines(transitions: Sequence[Transition]) -> list[str]:
    out = []
    for t in transitions:
        a = t.alert
        tags = {"alertname": a.rule, "severity": a.severity, **dict(a.labels)}
        tag_text = ",".join(f"{escape_tag(k)}={tv}" for k, v in sorted(tags.items()) if (tv := _tag(v)))
        value = a.value if math.isfinite(a.value) else 0.0
        firing = 1 if t.state is AlertState.FIRING else 0
        out.append(f"{MEASUREMENT},{tag_text} state={_string(t.state.value)},firing={firing}i,value={value!r},"
                   f"summary={_string(a.summary[:1000])},fingerprint={_string(a.fingerprint)} {t.time_ns}")
    return out


class InfluxHistory:
    """Writes transitions to the InfluxDB store named by the configuration's store URL."""

    def __init__(self, url: str) -> None:
        from observatory.stores import open_store

        self.store = open_store(url)

    def write(self, transitions: Sequence[Transition]) -> None:
        if not transitions:
            return
        body = ("\n".join(lines(transitions)) + "\n").encode()
        t = self.store.t
        what = f"write {len(transitions)} alert transitions to {self.store.where}"
        if t.api == 1:
            params = {"db": t.database, "precision": "ns"}
            if t.rp:
                params["rp"] = t.rp
            self.store.http.request("POST", "/write", what, fields=params, body=body)
        else:
            params = {"bucket": t.database, "precision": "ns", **({"org": t.org} if t.org else {})}
            self.store.http.request("POST", "/api/v2/write", what, fields=params, body=body)

    def close(self) -> None:
        self.store.close()
