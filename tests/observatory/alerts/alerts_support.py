"""Synthetic field data for the alert tests: a clean multi-week season, and the same season with faults.

One site, one gateway, four TEROS-like probes at 10 cm and one at 30 cm
(vwc, soil temperature, raw counts every 15 minutes) and a NIR probe
(spectrum with dark and white references, and SOC, hourly), plus the
gateway's status every minute. The clean season has what a field has:
diurnal soil temperature damped with depth (amplitude A e^{-z/d}, phase lag
z/d, damping depth d = 10 cm; Hillel, *Environmental Soil Physics*, 1998,
ch. 12), rain events that wet the soil within the hour and dry it down over
days (delayed and damped at 30 cm), sensor noise and resolution, per-probe
offsets, a few QC flags, and a slowly warming lamp. `FAULTS` names each
injected fault with the rule and subject that must fire, and nothing else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from humus.records import Observation, QualityFlag, Source
from observatory.alerts.buffers import GatewayEventRecord, StatusPoint, ProbeStatus

SITE, GATEWAY = "farm-a", "gw-1"
T0 = 1_767_225_600 * 10**9          # 2026-01-01T00:00Z
MIN = 60 * 10**9
H = 60 * MIN
DAY = 24 * H
STEP = 15 * MIN
BANDS = np.linspace(1350.0, 2550.0, 32)

PROBES = (("teros-1", 10.0, 0.000), ("teros-2", 10.0, 0.015), ("teros-3", 10.0, -0.012),
          ("teros-4", 10.0, 0.006), ("teros-5", 30.0, 0.0))


@dataclass
class Season:
    observations: list[Observation]
    statuses: list[tuple[str, str, StatusPoint]]
    events: list[tuple[str, str, GatewayEventRecord]] = field(default_factory=list)
    start_ns: int = T0
    end_ns: int = T0


def _rain(n: int, rng: np.random.Generator, depth: float) -> np.ndarray:
    """Volumetric water content at `depth`: rain pulses (every ~4 days) and exponential drydown."""
    vwc = np.empty(n)
    level = 0.22
    events = set(rng.choice(n, size=max(1, n // (4 * 96)), replace=False).tolist())
    sizes = {e: rng.uniform(0.05, 0.15) for e in events}
    lag = int(6 * H / STEP) if depth > 20 else 0
    damp = 0.4 if depth > 20 else 1.0
    for i in range(n):
        level = 0.12 + (level - 0.12) * math.exp(-(STEP / H) / 120.0)       # drydown, 5-day time constant
        src = i - lag
        if src in sizes:
            level = min(0.45, level + damp * sizes[src])
        vwc[i] = level
    return vwc


def clean_season(days: int = 21, seed: int = 7) -> Season:
    rng = np.random.default_rng(seed)
    n = days * DAY // STEP
    t = T0 + np.arange(n, dtype=np.int64) * STEP
    hours = (t - T0) / H
    obs: list[Observation] = []
    base_rain = {d: _rain(n, np.random.default_rng(seed + 1), d) for d in (10.0, 30.0)}
    for probe, depth, offset in PROBES:
        d = 10.0   # damping depth, cm
        amp = 6.0 * math.exp(-depth / d)
        temp = 8.0 + 0.05 * hours / 24 + amp * np.sin(2 * np.pi * hours / 24 - depth / d) \
            + rng.normal(0, 0.05, n) + rng.normal(0, 0.3)
        temp = np.round(temp, 1)
        vwc = base_rain[depth] + offset + rng.normal(0, 0.002, n)
        vwc = np.round(vwc, 3)
        counts = np.round(1800 + 3000 * vwc + rng.normal(0, 2, n))
        qc_flags = np.where(rng.random(n) < 0.01, 3, 1)     # ~1 % of values suspect (rain fronts, spikes)
        for i in range(n):
            common = dict(site=SITE, gateway=GATEWAY, probe=probe, time_ns=int(t[i]), depth_cm=depth)
            obs.append(Observation(quantity="raw_counts", value=float(counts[i]), unit="counts", flag=QualityFlag.PASS,
                                   flag_test="gross_range", **common))
            obs.append(Observation(quantity="soil_temp", value=float(temp[i]), unit="degC",
                                   flag=QualityFlag(int(qc_flags[i])),
                                   flag_test="spike" if qc_flags[i] == 3 else "gross_range",
                                   **common))
            obs.append(Observation(quantity="vwc", value=float(vwc[i]), unit="m3/m3", flag=QualityFlag.PASS,
                                   source=Source.CALIBRATED, model_id="teros12-mineral", model_version="1",
                                   uncertainty=0.03, **common))
    # The NIR probe: hourly spectra with references, and SOC estimates.
    nh = days * 24
    th = T0 + np.arange(nh, dtype=np.int64) * H
    for i in range(nh):
        hour = (th[i] - T0) / H
        temp_c = 8.0 + 2.0 * math.sin(2 * math.pi * hour / 24)
        dark = 1500.0 + 3.0 * temp_c + rng.normal(0, 2, len(BANDS))
        white = dark + 20000.0 * (1 - 0.00002 * hour) + rng.normal(0, 30, len(BANDS))
        sample = dark + 0.3 * (white - dark) + rng.normal(0, 20, len(BANDS))
        common = dict(site=SITE, gateway=GATEWAY, probe="nir-1", time_ns=int(th[i]), depth_cm=5.0)
        wl = tuple(BANDS.tolist())
        obs.append(Observation(quantity="spectrum", value=tuple(sample.tolist()), wavelengths_nm=wl, unit="counts",
                               flag=QualityFlag.NOT_EVALUATED, **common))
        obs.append(Observation(quantity="spectrum_dark", value=tuple(dark.tolist()), wavelengths_nm=wl, unit="counts",
                               flag=QualityFlag.NOT_EVALUATED, **common))
        obs.append(Observation(quantity="spectrum_white", value=tuple(white.tolist()), wavelengths_nm=wl,
                               unit="counts", flag=QualityFlag.NOT_EVALUATED, **common))
        out_of_domain = rng.random() < 0.03
        obs.append(Observation(quantity="soc", value=float(2.4 + rng.normal(0, 0.1)), unit="%", uncertainty=0.2,
                               flag=QualityFlag.SUSPECT if out_of_domain else QualityFlag.PASS,
                               flag_test="applicability_domain" if out_of_domain else None,
                               source=Source.CALIBRATED, model_id="soc-nir", model_version="3", **common))
    statuses = []
    probes = {p: ProbeStatus("ok", "", 900.0, None) for p, _, _ in PROBES}
    probes["nir-1"] = ProbeStatus("ok", "", 3600.0, None)
    for k in range(days * 24 * 60):
        ts = T0 + k * MIN + 7 * 10**9
        statuses.append((SITE, GATEWAY, StatusPoint(ts, True, unsent=float(k % 7), oldest_unsent_s=float(k % 3) * 20,
                                                    dropped_by_quota=0.0, disk_free_bytes=8e9 - k * 1e3,
                                                    clock_synced=True, clock_steps=0, probes=probes)))
    return Season(obs, statuses, [], T0, T0 + days * DAY)


@dataclass(frozen=True)
class Fault:
    rule: str
    subject: str          # as observatory.alerts.rules.subject_text prints it
    start_ns: int         # the fault's span: the alert must fire within it (plus the rule's delay)
    end_ns: int


FAULTS = (
    Fault("no_data", "farm-a/gw-1/teros-2", T0 + 2 * DAY, T0 + 2 * DAY + 6 * H),
    Fault("flat_line", "farm-a/gw-1/teros-3 10 cm vwc", T0 + 4 * DAY, T0 + 6 * DAY + 12 * H),
    Fault("out_of_range", "farm-a/gw-1/teros-4 10 cm vwc", T0 + 7 * DAY, T0 + 7 * DAY + 4 * H),
    Fault("qartod_flags", "farm-a/gw-1/teros-1 10 cm soil_temp", T0 + 8 * DAY, T0 + 8 * DAY + 10 * H),
    Fault("neighbours", "farm-a/gw-1/teros-2 10 cm vwc", T0 + 10 * DAY, T0 + 12 * DAY + 12 * H),
    Fault("spectral_saturation", "farm-a/gw-1/nir-1 5 cm spectrum", T0 + 9 * DAY, T0 + 10 * DAY),
    Fault("white_reference_drift", "farm-a/gw-1/nir-1 5 cm spectrum_white", T0 + 16 * DAY, T0 + 21 * DAY),
    Fault("dark_reference_drift", "farm-a/gw-1/nir-1 5 cm spectrum_dark", T0 + 13 * DAY, T0 + 15 * DAY),
    Fault("calibration_domain", "farm-a/gw-1/nir-1 5 cm soc", T0 + 11 * DAY, T0 + 14 * DAY),
    Fault("gateway_offline", "farm-a/gw-1", T0 + 3 * DAY, T0 + 3 * DAY + 2 * H),
    Fault("spool_backlog", "farm-a/gw-1", T0 + 5 * DAY, T0 + 5 * DAY + 4 * H),
    Fault("disk_low", "farm-a/gw-1", T0 + 6 * DAY, T0 + 6 * DAY + 2 * H),
    Fault("clock", "farm-a/gw-1", T0 + 12 * DAY, T0 + 12 * DAY + 3 * H),
    Fault("gateway_event", "farm-a/gw-1 spool_quota gw-1", T0 + 14 * DAY, T0 + 14 * DAY + 2 * H),
)


def faulty_season(days: int = 21, seed: int = 7) -> Season:
    s = clean_season(days, seed)
    f = {x.rule: x for x in FAULTS}
    rng = np.random.default_rng(seed + 99)

    def within(o: Observation, rule: str) -> bool:
        return f[rule].start_ns <= o.time_ns < f[rule].end_ns

    out = []
    stuck = None
    for o in s.observations:
        if o.probe == "teros-2" and within(o, "no_data"):
            o = replace(o, value=math.nan, flag=QualityFlag.MISSING, flag_test="absent", uncertainty=None,
                        wavelengths_nm=None)
        elif o.probe == "teros-3" and o.quantity == "vwc" and within(o, "flat_line"):
            stuck = o.value if stuck is None else stuck
            o = replace(o, value=stuck)
        elif o.probe == "teros-4" and o.quantity == "vwc" and within(o, "out_of_range"):
            o = replace(o, value=0.93)
        elif o.probe == "teros-1" and o.quantity == "soil_temp" and within(o, "qartod_flags") and rng.random() < 0.6:
            o = replace(o, flag=QualityFlag.SUSPECT, flag_test="rate_of_change")
        elif o.probe == "teros-2" and o.quantity == "vwc" and within(o, "neighbours"):
            o = replace(o, value=o.value + 0.15)
        elif o.quantity == "spectrum" and within(o, "spectral_saturation"):
            o = replace(o, flag=QualityFlag.SUSPECT, flag_test="saturated")
        elif o.quantity == "spectrum_white" and within(o, "white_reference_drift"):
            frac = (o.time_ns - f["white_reference_drift"].start_ns) / (5 * DAY)
            o = replace(o, value=tuple(v * (1 - 0.4 * frac) for v in o.value))
        elif o.quantity == "spectrum_dark" and within(o, "dark_reference_drift"):
            o = replace(o, value=tuple(v * 1.5 for v in o.value))
        elif o.quantity == "soc" and within(o, "calibration_domain") and rng.random() < 0.6:
            o = replace(o, flag=QualityFlag.SUSPECT, flag_test="applicability_domain")
        out.append(o)
    s.observations = out
    statuses = []
    for site, gw, p in s.statuses:
        t = p.time_ns
        if f["gateway_offline"].start_ns <= t < f["gateway_offline"].end_ns:
            if t - f["gateway_offline"].start_ns < MIN:
                statuses.append((site, gw, StatusPoint(t, False)))       # the last will
            continue
        if f["spool_backlog"].start_ns <= t < f["spool_backlog"].end_ns:
            age = (t - f["spool_backlog"].start_ns) / 1e9
            p = replace(p, unsent=50.0 + age / 10, oldest_unsent_s=age)
        if f["disk_low"].start_ns <= t < f["disk_low"].end_ns:
            p = replace(p, disk_free_bytes=5e7)
        if f["clock"].start_ns <= t < f["clock"].end_ns:
            p = replace(p, clock_synced=False)
        statuses.append((site, gw, p))
    s.statuses = statuses
    s.events = [(SITE, GATEWAY, GatewayEventRecord(f["gateway_event"].start_ns + 60 * 10**9, "spool_quota", GATEWAY,
                                                   "spool over its quota: dropped the oldest 12 batches")),
                (SITE, GATEWAY, GatewayEventRecord(T0 + 1 * DAY, "probe_state", "teros-1", "probe teros-1: timeout"))]
    return s


def kept_statuses(season: Season) -> list:
    """The statuses the service would record (observatory.alerts.engine's filter), as it does for replays."""
    from observatory.alerts.config import RulesSettings
    from observatory.alerts.engine import Engine

    e = Engine(RulesSettings())
    return [(site, gw, p) for site, gw, p in season.statuses if e.take_status(site, gw, p)]


# -- local receivers: an HTTP server for webhooks, an SMTP server with STARTTLS -----------------


class WebhookSink:
    """A real HTTP server on loopback that keeps every JSON POST; `fail_first` answers 503 that many times."""

    def __init__(self, fail_first: int = 0) -> None:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        sink = self
        self.posts: list[dict] = []
        self.refused = 0
        self.fail_first = fail_first
        self._cond = threading.Condition()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with sink._cond:
                    if sink.refused < sink.fail_first:
                        sink.refused += 1
                        self.send_response(503)
                        self.end_headers()
                        return
                    sink.posts.append(json.loads(body))
                    sink._cond.notify_all()
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def wait(self, n: int, timeout: float = 15.0) -> list[dict]:
        import time
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.posts) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(self.posts)} webhook posts, expected {n}: {self.posts}")
                self._cond.wait(left)
            return list(self.posts)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class SmtpSink:
    """aiosmtpd on loopback requiring STARTTLS (a certificate from a throw-away CA) and AUTH over it."""

    def __init__(self, directory, user: str = "alerts", password: str = "s3cret") -> None:
        import ssl
        import threading

        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult

        from humus.pki import issue, make_ca

        ca = make_ca("test CA")
        leaf = issue(ca, "127.0.0.1", server_names=["127.0.0.1"])
        self.ca_file = directory / "ca.pem"
        self.ca_file.write_bytes(ca.cert_pem)
        (directory / "smtp.key").write_bytes(leaf.key_pem)
        (directory / "smtp.crt").write_bytes(leaf.cert_pem)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(directory / "smtp.crt", directory / "smtp.key")
        self.messages: list = []
        self.logins: list[str] = []
        self._cond = threading.Condition()
        sink = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
                import email
                with sink._cond:
                    sink.messages.append((envelope.rcpt_tos, email.message_from_bytes(envelope.content),
                                          session.ssl is not None))
                    sink._cond.notify_all()
                return "250 OK"

        def authenticate(server, session, envelope, mechanism, auth_data):
            ok = auth_data.login.decode() == user and auth_data.password.decode() == password
            if ok:
                sink.logins.append(auth_data.login.decode())
            return AuthResult(success=ok)

        from servers import free_port
        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, tls_context=ctx,
                                     require_starttls=True, authenticator=authenticate, auth_require_tls=True)
        self.controller.start()

    def wait(self, n: int, timeout: float = 15.0) -> list:
        import time
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.messages) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(self.messages)} e-mails, expected {n}")
                self._cond.wait(left)
            return list(self.messages)

    def close(self) -> None:
        self.controller.stop()


def wait_for(predicate, timeout: float = 15.0, what: str = "condition"):
    """Poll `predicate` until it is true (returned) or the deadline passes (AssertionError)."""
    import time
    deadline = time.monotonic() + timeout
    while True:
        v = predicate()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def status_doc(site: str, gateway: str, p: StatusPoint) -> dict:
    """The status JSON a collector publishes (docs/collector.md) for a StatusPoint; the last will when offline."""
    if not p.online:
        return {"schema": "humus/v1/status", "state": "offline", "site": site, "gateway": gateway}
    return {"schema": "humus/v1/status", "state": "online", "site": site, "gateway": gateway, "time_ns": p.time_ns,
            "probes": {k: {"state": v.state, "interval_s": v.interval_s, "last_ok_ns": v.last_ok_ns,
                           **({"message": v.message} if v.message else {})} for k, v in p.probes.items()},
            "clock": {"synced": p.clock_synced, "steps": p.clock_steps, "last_step_s": p.last_step_s},
            "spool": {"unsent": p.unsent, "oldest_unsent_age_s": p.oldest_unsent_s,
                      "dropped_by_quota": p.dropped_by_quota},
            "disk_free_bytes": p.disk_free_bytes}


class FakeClock:
    """The service's clock in tests that replay a season through a real broker faster than it happened."""

    def __init__(self, t_ns: int) -> None:
        self.t = t_ns

    def __call__(self) -> int:
        return self.t
