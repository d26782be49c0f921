"""The v2 write path (influxdb-client) against VictoriaMetrics, an independent implementation.

VictoriaMetrics keeps milliseconds, turns strings into 0 and keeps duplicates
(DESIGN.md), so this checks only what was sent: names, tags, numbers, times.
InfluxDB semantics are the contract suite's business.
"""

from __future__ import annotations

import itertools
import json
import time
import urllib.parse
import urllib.request

import pytest

from humus.records import Observation, QualityFlag, Source
from observatory.store import StoreUnavailable
from observatory.stores import open_store

_sites = itertools.count(1)


def export(server, site: str, expect: int, timeout: float = 15.0) -> list[dict]:
    """Series of `site` from /api/v1/export, waiting (bounded) until `expect` series are flushed."""
    deadline = time.monotonic() + timeout
    query = urllib.parse.urlencode({"match[]": f'{{__name__=~".+", site="{site}"}}'})
    while True:
        urllib.request.urlopen(server.url + "/internal/force_flush", timeout=5).read()
        with urllib.request.urlopen(f"{server.url}/api/v1/export?{query}", timeout=5) as r:
            rows = [json.loads(line) for line in r.read().splitlines() if line.strip()]
        if len(rows) >= expect or time.monotonic() > deadline:
            return rows
        time.sleep(0.3)


def test_v2_write_through_influxdb_client_reaches_victoria_metrics(victoria_metrics_server, store_vm_v2_url):
    site = f"vm-site-{next(_sites)}"
    now_ms = time.time_ns() // 10**6 - 60_000  # VictoriaMetrics' default retention is one month
    obs = [Observation(site, "gw-1", "p1", "vwc", (now_ms + i * 1000) * 10**6 + 123, 0.2 + i / 100, "m3/m3",
                       depth_cm=10.0, uncertainty=0.01, flag=QualityFlag.SUSPECT, flag_test="spike")
           for i in range(20)]
    obs.append(Observation(site, "gw-1", "p1", "soc", now_ms * 10**6, 2.5, "%", depth_cm=10.0,
                           source=Source.CALIBRATED, model_id="m", model_version="1"))
    store = open_store(store_vm_v2_url)
    store.write(obs)
    store.close()
    rows = export(victoria_metrics_server, site, expect=16)
    by_name = {(r["metric"]["__name__"], r["metric"]["quantity"]): r for r in rows}
    vwc = by_name[("humus_obs_value", "vwc")]
    assert vwc["metric"] == {"__name__": "humus_obs_value", "site": site, "gateway": "gw-1", "probe": "p1",
                             "depth_cm": "10", "quantity": "vwc", "source": "raw", "unit": "m3/m3"}
    assert vwc["values"] == pytest.approx([0.2 + i / 100 for i in range(20)], abs=0, rel=1e-15)
    assert vwc["timestamps"] == [now_ms + i * 1000 for i in range(20)]  # ns sent, ms kept
    assert by_name[("humus_obs_flag", "vwc")]["values"] == [3] * 20
    assert by_name[("humus_obs_uncertainty", "vwc")]["values"] == [0.01] * 20
    assert by_name[("humus_obs_value", "soc")]["metric"]["source"] == "calibrated"
    assert by_name[("humus_obs_value", "soc")]["metric"]["model_version"] == "1"


def test_v2_write_to_a_server_that_is_not_listening_raises_store_unavailable():
    import servers
    store = open_store(f"influxdb2://127.0.0.1:{servers.free_port()}/b?org=humus&retries=2")
    with pytest.raises(StoreUnavailable, match="unreachable"):
        store.write([Observation("a", "b", "c", "vwc", time.time_ns(), 0.1, "m3/m3")])
    store.close()
