"""The Grafana dashboards in deploy/grafana: well formed, and every query they hold answers with data.

Grafana is not installed (it is not in Debian); the test does what Grafana does with a dashboard instead:
reads its template variables from their own SHOW TAG VALUES queries, substitutes them ($site, $timeFilter,
$__interval...) as Grafana's InfluxDB data source does, and sends every panel's, variable's and
annotation's InfluxQL to a real InfluxDB 1.x through its HTTP /query API. The data is a `humus demo` run
(simulated probes -> collector -> MQTT -> ingest, one probe's cable pulled so an alert fires and
resolves), copied from the demo's archive into InfluxDB through the InfluxDB store and the alerts
service's InfluxDB history writer: the points Grafana reads are the ones ingest and alerts write.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from observatory.alerts import influx_history
from observatory.alerts.buffers import SeriesKey
from observatory.alerts.lifecycle import Alert, AlertState, Transition
from observatory.alerts.rules import series_labels
from observatory.stores.lineprotocol import TEST_CODES, TEST_NAMED, depth_tag

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
FLAG_TEXT = {"1": "pass", "2": "not evaluated", "3": "suspect", "4": "fail", "9": "missing"}
# Grafana's own variables, and the alias patterns of its InfluxDB data source ($col, $tag_X).
BUILTIN = {"timeFilter", "__interval", "__interval_ms", "__from", "__to", "__url_time_range", "__data",
           "__value", "__field", "__series", "__all_variables", "__dashboard", "__user", "__org", "col"}
VAR_REF = re.compile(r"\$\{(\w+)(?:[:.][^}]*)?\}|\$(\w+)|\[\[(\w+)\]\]")
REGEX_SPECIAL = re.compile(r"[\\^$*+?.()|\[\]{}/]")
INTERVAL = "2s"


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def _datasource_uid() -> str:
    doc = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "humus.yaml").read_text())
    (ds,) = doc["datasources"]
    assert ds["type"] == "influxdb" and ds["jsonData"]["version"] == "InfluxQL"
    assert ds["jsonData"]["dbName"] == "humus"
    return ds["uid"]


def _panels(dash: dict) -> list[dict]:
    out = []
    for p in dash["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))          # panels inside a collapsed row
    return out


def _queries(dash: dict) -> list[tuple[str, str, dict | None]]:
    """(where, InfluxQL, panel or None) of every panel target, variable and annotation of a dashboard."""
    out = [(f"variable {v['name']}", v["query"], None) for v in dash["templating"]["list"]]
    out += [(f"panel {p['title']!r} {t['refId']}", t["query"], p) for p in _panels(dash) for t in p.get("targets", [])]
    out += [(f"annotation {a['name']!r}", a["query"], None) for a in dash["annotations"]["list"] if "query" in a]
    return out


def _refs(text: str) -> set[str]:
    return {a or b or c for a, b, c in VAR_REF.findall(text)}


# -- structure ------------------------------------------------------------------------------------------


def test_there_are_the_three_dashboards_and_the_provisioning_files():
    assert [p.name for p in DASHBOARDS] == ["probe-detail.json", "site-overview.json", "soil-carbon.json"]
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "humus.yaml").read_text())
    (prov,) = provider["providers"]
    assert prov["type"] == "file" and prov["options"]["path"]
    ds = (GRAFANA / "provisioning" / "datasources" / "humus.yaml").read_text()
    # No credential in the file: Grafana takes them from its environment.
    assert "${HUMUS_INFLUX_PASSWORD}" in ds and "${HUMUS_INFLUX_USER}" in ds and "${HUMUS_INFLUX_URL}" in ds


def test_uids_are_unique_and_every_datasource_is_the_provisioned_one():
    uid = _datasource_uid()
    dashes = [_load(p) for p in DASHBOARDS]
    assert len({d["uid"] for d in dashes}) == len(dashes)
    for d in dashes:
        assert 36 <= d["schemaVersion"] <= 41, d["uid"]
        ids = [p["id"] for p in _panels(d)]
        assert len(ids) == len(set(ids)), f"{d['uid']}: panel ids {ids}"
        sources = [v["datasource"] for v in d["templating"]["list"]]
        sources += [a["datasource"] for a in d["annotations"]["list"] if "query" in a]
        for p in _panels(d):
            if p.get("targets"):
                sources.append(p["datasource"])
                sources += [t["datasource"] for t in p["targets"]]
        assert sources and all(s == {"type": "influxdb", "uid": uid} for s in sources), (d["uid"], sources)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_variable_used_is_defined_and_queries_only_read(path):
    dash = _load(path)
    names = [v["name"] for v in dash["templating"]["list"]]
    assert len(names) == len(set(names))
    for i, v in enumerate(dash["templating"]["list"]):
        assert v["query"].startswith('SHOW TAG VALUES FROM "humus_obs" WITH KEY = '), v["name"]
        # a variable may only depend on the ones before it (Grafana refreshes them in order)
        assert _refs(v["query"]) <= set(names[:i]) | BUILTIN, v["name"]
    texts = [q for _, q, _ in _queries(dash)]
    for p in _panels(dash):
        texts += [p["title"], p.get("repeat") and f"${p['repeat']}" or ""]
        texts += [link["url"] for o in p["fieldConfig"]["overrides"] for prop in o["properties"]
                  if prop["id"] == "links" for link in prop["value"]]
    used = set().union(*(_refs(t) for t in texts))
    assert used - BUILTIN <= set(names), f"{path.name}: undefined variables {used - BUILTIN - set(names)}"
    for where, q, panel in _queries(dash):
        assert re.match(r"(SELECT|SHOW) ", q), f"{path.name} {where}: a dashboard only reads"
        if panel is not None:
            assert "$timeFilter" in q, f"{path.name} {where}: no $timeFilter (a full scan of the archive)"
            assert "GROUP BY time(" not in q or "GROUP BY time($__interval)" in q, f"{path.name} {where}"
        assert "-1" not in q and "10.0" not in q, f"{path.name} {where}: a sentinel or layout-1 depth"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_aliases_name_tags_the_query_groups_by(path):
    for p in _panels(_load(path)):
        for t in p.get("targets", []):
            group_by = t["query"].split("GROUP BY", 1)[1] if "GROUP BY" in t["query"] else ""
            for tag in re.findall(r"\$tag_(\w+)", t.get("alias", "")):
                assert f'"{tag}"' in group_by, f"{path.name} {p['title']!r}: alias $tag_{tag} not grouped by"


def _mappings(props: list[dict]) -> dict[str, str]:
    for prop in props:
        if prop["id"] == "mappings":
            return {k: v.get("text") for m in prop["value"] for k, v in m["options"].items()}
    return {}


def test_flags_and_tests_are_shown_by_name():
    flag_panels = 0
    for path in DASHBOARDS:
        for p in _panels(_load(path)):
            fc = p["fieldConfig"]
            tables = {o["matcher"]["options"]: _mappings(o["properties"]) for o in fc["overrides"]}
            if "flag" in tables:
                assert tables["flag"] == FLAG_TEXT, (path.name, p["title"])
                flag_panels += 1
            if "test" in tables:
                assert tables["test"] == {"0": "none", **{str(c): n for n, c in TEST_CODES.items()},
                                          str(TEST_NAMED): "(see flag_test)"}
            if p["type"] == "state-timeline" and "humus_obs" in p["targets"][0]["query"]:
                assert _mappings([{"id": "mappings", "value": fc["defaults"]["mappings"]}]) == FLAG_TEXT
                flag_panels += 1
    assert flag_panels >= 6


def test_alert_labels_write_the_depth_as_configured_like_the_observations():
    """One filter, depth_cm='10', finds a series and the alerts about it (issue 18)."""
    for depth, text in ((10.0, "10"), (12.5, "12.5"), (0.0, "0"), (12.3456789, "12.3456789")):
        labels = series_labels(SeriesKey("farm-1", "gw-1", "p1", depth, "vwc", "calibrated"))
        assert dict(labels)["depth_cm"] == text == depth_tag(depth)
        alert = Alert("flat_line", labels, "warning", AlertState.FIRING, 1, fired_at_ns=1, summary="s")
        (line,) = influx_history.lines([Transition(alert, AlertState.FIRING, 1)])
        assert f",depth_cm={text}," in line, line
    no_depth = dict(series_labels(SeriesKey("farm-1", "gw-1", "p1", None, "vwc", "calibrated")))
    assert "depth_cm" not in no_depth


# -- every query against InfluxDB fed by a demo run ------------------------------------------------------


@dataclass
class Fed:
    url: str
    db: str
    time_filter: str


def _query(fed: Fed, q: str) -> list[dict]:
    """The series of one InfluxQL statement; any error fails with the server's message."""
    data = urllib.parse.urlencode({"q": q, "db": fed.db, "epoch": "ms"}).encode()
    with urllib.request.urlopen(urllib.request.Request(fed.url + "/query", data=data), timeout=30) as r:
        doc = json.loads(r.read())
    assert "error" not in doc, (q, doc)
    (result,) = doc["results"]
    assert "error" not in result, (q, result["error"])
    return result.get("series", [])


@pytest.fixture(scope="module")
def fed(influxdb_server, tmp_path_factory) -> Fed:
    from observatory.alerts.state import AlertStore
    from observatory.store import Selection
    from observatory.stores import open_store

    d = tmp_path_factory.mktemp("grafana") / "demo"
    r = subprocess.run([sys.executable, "-m", "humus.cli", "demo", "--duration", "20", "--interval", "1",
                        "--dir", str(d), "--pull", "teros-a:3:10"], capture_output=True, text=True, timeout=150)
    assert r.returncode == 0, r.stdout + r.stderr
    fed = Fed(influxdb_server.url, "humus_grafana", "")
    _query(fed, f'CREATE DATABASE "{fed.db}"')
    src = open_store(f"sqlite:{d / 'archive.sqlite'}")
    try:
        observations = list(src.query(Selection()))
    finally:
        src.close()
    dst = open_store(f"influxdb://127.0.0.1:{influxdb_server.port}/{fed.db}")
    try:
        dst.write(observations)
    finally:
        dst.close()
    with AlertStore(d / "archive.sqlite") as state:
        rows = state.history()
    assert {(h.rule, h.state) for h in rows} == {("no_data", "firing"), ("no_data", "resolved")}, rows
    transitions = [Transition(Alert(h.rule, tuple(sorted(h.labels.items())), h.severity, AlertState(h.state),
                                    h.active_at_ns, h.fired_at_ns, h.resolved_at_ns, value=h.value or 0.0,
                                    summary=h.summary), AlertState(h.state), h.time_ns) for h in rows]
    history = influx_history.InfluxHistory(f"influxdb://127.0.0.1:{influxdb_server.port}/{fed.db}")
    try:
        history.write(transitions)
    finally:
        history.close()
    times = [o.time_ns for o in observations]
    # Grafana's $timeFilter for a range from a minute before the first point to a minute after the last
    fed.time_filter = f"time >= {min(times) // 10**6 - 60_000}ms and time <= {max(times) // 10**6 + 60_000}ms"
    return fed


def _escape(value: str) -> str:
    return REGEX_SPECIAL.sub(lambda m: "\\" + m.group(0), value)


def _interpolate(q: str, chosen: dict[str, tuple[list[str], bool]], fed: Fed) -> str:
    """What Grafana's InfluxDB data source sends: a multi-value or All selection as (a|b), regex-escaped."""
    def sub(m: re.Match) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        if name == "timeFilter":
            return fed.time_filter
        if name == "__interval":
            return INTERVAL
        values, multi = chosen[name]
        if not multi:
            return values[0]
        return "(" + "|".join(_escape(v) for v in values) + ")"

    return VAR_REF.sub(sub, q)


def _selections(dash: dict, fed: Fed):
    """Every selection a user can make: each single value of each variable, and All where offered."""
    variables = dash["templating"]["list"]

    def walk(i: int, chosen: dict):
        if i == len(variables):
            yield dict(chosen)
            return
        v = variables[i]
        series = _query(fed, _interpolate(v["query"], chosen, fed))
        values = sorted({row[1] for s in series for row in s["values"]})
        assert values, f"{dash['uid']}: variable {v['name']} has no value with {chosen}"
        options = [([x], v["multi"] or v["includeAll"]) for x in values]
        if v["includeAll"]:
            options.insert(0, (values, True))         # "All" comes first: the default
        for opt in options:
            chosen[v["name"]] = opt
            yield from walk(i + 1, chosen)
        del chosen[v["name"]]

    return list(walk(0, {}))


def _rows(series: list[dict]) -> list[dict]:
    """Rows with at least one value besides the time."""
    out = []
    for s in series:
        for row in s["values"]:
            d = dict(zip(s["columns"], row))
            if any(v is not None for k, v in d.items() if k != "time"):
                out.append(d)
    return out


@pytest.mark.servers
@pytest.mark.timeout(240)
@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_query_of_the_dashboard_returns_data_from_a_demo_run(path, fed):
    dash = _load(path)
    selections = _selections(dash, fed)
    assert 1 <= len(selections) <= 60, len(selections)
    answered: dict[str, int] = {}
    default_answered: set[str] = set()
    bands: list[dict] = []
    for n, chosen in enumerate(selections):
        for where, q, panel in _queries(dash):
            repeat = panel.get("repeat") if panel else None
            variants = [chosen]
            if repeat:                               # one panel per value of the repeated variable
                variants = [{**chosen, repeat: ([v], False)} for v in chosen[repeat][0]]
            for c in variants:
                rows = _rows(_query(fed, _interpolate(q, c, fed)))
                answered[where] = answered.get(where, 0) + len(rows)
                if n == 0 and rows:
                    default_answered.add(where)
                if '- mean("uncertainty") AS "lower"' in q:
                    bands += rows
    empty = [w for w, count in answered.items() if not count]
    assert not empty, f"{path.name}: no data from {empty} in any of {len(selections)} selections"
    # What a user sees on opening the dashboard (first value, or All): every panel has data.
    panels = {w for w, _, p in _queries(dash) if p is not None}
    assert panels <= default_answered, f"{path.name}: empty on opening: {panels - default_answered}"
    if bands:
        # The band is value ± the stated uncertainty where one is known, and absent (not value ± -1) where not.
        with_u = [b for b in bands if b["lower"] is not None]
        assert with_u and all(b["lower"] < b["value"] < b["upper"] for b in with_u)
        assert all(b["upper"] is None for b in bands if b["lower"] is None)


@pytest.mark.servers
def test_tags_filter_naturally_on_the_demo_data(fed):
    """Depths as the configuration writes them, no -1 uncertainties, flags as numbers 1..9."""
    depths = {row[1] for s in _query(fed, 'SHOW TAG VALUES FROM "humus_obs" WITH KEY = "depth_cm"')
              for row in s["values"]}
    assert depths == {"5", "10", "20"}      # the demo's gateway.toml: depth_cm = 5, 10, 20
    soc = _rows(_query(fed, f'SELECT "value", "uncertainty" FROM "humus_obs" WHERE "depth_cm" = \'5\' AND '
                            f'"quantity" = \'soc\' AND {fed.time_filter}'))
    assert soc and all(r["uncertainty"] > 0 for r in soc)
    assert not _query(fed, f'SELECT "uncertainty" FROM "humus_obs" WHERE "uncertainty" < 0 AND {fed.time_filter}')
    raw = _rows(_query(fed, f'SELECT "value", "uncertainty" FROM "humus_obs" WHERE "quantity" = \'raw_counts\' '
                            f'AND {fed.time_filter}'))
    assert raw and all(r["uncertainty"] is None for r in raw)
    missing = _rows(_query(fed, f'SELECT "value", "flag" FROM "humus_obs" WHERE "flag" = 9 AND {fed.time_filter}'))
    assert missing and all(r["value"] is None for r in missing)     # the pulled cable: flag 9, no value
    flags = {r["flag"] for r in _rows(_query(fed, f'SELECT "flag" FROM "humus_obs" WHERE {fed.time_filter}'))}
    assert flags <= {1, 2, 3, 4, 9} and {1, 9} <= flags
    alerts = _rows(_query(fed, f'SELECT "firing", "state" FROM "humus_alert" WHERE "probe" = \'teros-a\' '
                               f'AND {fed.time_filter}'))
    assert [(r["firing"], r["state"]) for r in alerts] == [(1, "firing"), (0, "resolved")]


def test_a_multi_value_or_all_selection_is_sent_as_grafana_sends_it():
    chosen = {"site": (["farm-1"], False), "depth_cm": (["10", "12.5"], True)}
    fed = Fed("", "", "time >= 1ms and time <= 2ms")
    assert _interpolate('"site" =~ /^$site$/ AND "depth_cm" =~ /^$depth_cm$/ AND $timeFilter '
                        'GROUP BY time($__interval)', chosen, fed) == \
        '"site" =~ /^farm-1$/ AND "depth_cm" =~ /^(10|12\\.5)$/ AND time >= 1ms and time <= 2ms GROUP BY time(2s)'
    with pytest.raises(KeyError):
        _interpolate('"probe" =~ /^$probe$/', chosen, fed)
