"""InfluxDB stores: v1 `/write` (InfluxDB 1.x) or the v2 write API through influxdb-client,
both queried in InfluxQL over `/query` (InfluxDB 1.x, 2.x with DBRP mapping, 3.x).

Point layout: observatory.stores.lineprotocol. URLs and credentials: docs/stores.md.

Errors: a refused connection, a timeout or a 5xx answer raise StoreUnavailable
(after a few retries with exponential back-off: the ingest worker retries the
whole batch later, and the store is idempotent); a 4xx answer (bad data,
unknown database, bad credentials) raises StoreError with the server's message.
A write split into several requests that fails half way has stored a part;
writing the batch again is harmless.
"""

from __future__ import annotations

import base64
import json
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import urllib3

from humus.records import Observation, Source
from observatory.store import Selection, SeriesData, StoreError, StoreUnavailable, observations_of, series_sort_key
from observatory.stores import lineprotocol as lp

log = logging.getLogger(__name__)

LINES_PER_REQUEST = 5000
"""InfluxDB's recommended write batch size (docs: "Optimize writes", 5,000 lines)."""
MAX_BODY_BYTES = 4 * 1024 * 1024
"""Well under InfluxDB 1.x's default max-body-size (25 MB)."""
QUERY_CHUNK_ROWS = 10_000
"""Rows per chunk of a /query answer (2,000 was measurably slower for scalars; a chunk of
10,000 spectra of 2,000 bands is ~200 MB of JSON: query spectra by probe or time range)."""


@dataclass(frozen=True)
class InfluxTarget:
    """Where and how to talk to one InfluxDB database or bucket (parsed from a store URL)."""

    base_url: str            # http(s)://host:port
    database: str            # v1 database, or v2 bucket (queried via its DBRP mapping)
    api: int = 1             # 1: /write; 2: influxdb-client v2 write API
    rp: str | None = None
    org: str | None = None
    token: str | None = None
    user: str | None = None
    password: str | None = None
    timeout_s: float = 30.0
    retries: int = 3
    verify_tls: bool = True


def _error_text(body: bytes) -> str:
    try:
        doc = json.loads(body)
        return str(doc.get("error") or doc.get("message") or doc)
    except ValueError:
        return body.decode("utf-8", "replace").strip()[:300]


class _Http:
    """Keep-alive HTTP to one server; retries and error mapping live here once."""

    def __init__(self, target: InfluxTarget) -> None:
        self.t = target
        self.pool = urllib3.PoolManager(
            retries=False, timeout=urllib3.Timeout(connect=5.0, read=target.timeout_s),
            cert_reqs="CERT_REQUIRED" if target.verify_tls else "CERT_NONE", maxsize=2)
        self.headers = {}
        if target.token:
            self.headers["Authorization"] = f"Token {target.token}"
        elif target.user:
            cred = base64.b64encode(f"{target.user}:{target.password or ''}".encode()).decode()
            self.headers["Authorization"] = f"Basic {cred}"

    def request(self, method: str, path: str, what: str, fields: dict | None = None, body: bytes | None = None,
                preload: bool = True) -> urllib3.BaseHTTPResponse:
        url = self.t.base_url + path

        def once() -> urllib3.BaseHTTPResponse:
            if body is not None:
                from urllib.parse import urlencode
                return self.pool.request(method, url + "?" + urlencode(fields or {}), body=body,
                                         headers=self.headers, preload_content=preload)
            return self.pool.request(method, url, fields=fields, headers=self.headers,
                                     encode_multipart=False, preload_content=preload)

        return with_retries(once, what, self.t.base_url, self.t.retries)

    def close(self) -> None:
        self.pool.clear()


def with_retries(once: Callable, what: str, where: str, attempts: int):
    """Call `once()` up to `attempts` times with back-off 0.2, 0.8, 3.2 s... on outages; map errors."""
    delay = 0.2
    for attempt in range(max(1, attempts)):
        last_try = attempt + 1 >= max(1, attempts)
        try:
            r = once()
        except (urllib3.exceptions.HTTPError, OSError) as e:
            if last_try:
                raise StoreUnavailable(f"{what}: InfluxDB at {where} unreachable ({type(e).__name__}: "
                                       f"{str(e)[:200]}); is the server running?") from None
        else:
            status = getattr(r, "status", None)
            if status is None or status < 400:
                return r
            text = _error_text(r.data)
            if status < 500 and status != 429:
                raise StoreError(f"{what}: InfluxDB at {where} refused it ({status}): {text}")
            if last_try:
                raise StoreUnavailable(f"{what}: InfluxDB at {where} answered {status}: {text}")
        time.sleep(delay)
        delay *= 4
    raise AssertionError("unreachable")


def _quote_ident(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _quote_str(v: str) -> str:
    return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"


def influxql_select(sel: Selection, measurements: Sequence[str] = (lp.SCALAR, lp.SPECTRUM)) -> str:
    """The InfluxQL statement for a selection: tags in WHERE, one result series per series key.

    Integer time literals in InfluxQL are nanoseconds since the epoch
    (InfluxQL reference, "Absolute time"). GROUP BY * returns the tags once
    per series instead of once per row; LIMIT then applies per series, so
    the global limit is applied again after sorting.
    """
    where = []
    for name in ("site", "gateway", "probe", "quantity"):
        v = getattr(sel, name)
        if v is not None:
            where.append(f"{_quote_ident(name)}={_quote_str(v)}")
    if sel.source is not None:
        where.append(f"\"source\"={_quote_str(Source(sel.source).value)}")
    if sel.since_ns is not None:
        where.append(f"time >= {int(sel.since_ns)}")
    if sel.until_ns is not None:
        where.append(f"time < {int(sel.until_ns)}")
    q = "SELECT * FROM " + ",".join(_quote_ident(m) for m in measurements)
    if where:
        q += " WHERE " + " AND ".join(where)
    q += " GROUP BY *"
    if sel.limit is not None:
        q += f" LIMIT {int(sel.limit)}"
    return q


def parse_results(lines: Iterable[bytes], what: str, convert: Callable | None = None) -> dict[tuple, dict]:
    """Merge a (chunked) /query JSON answer into {(measurement, tags): {"columns", "values" or "pieces"}}.

    With `convert(name, columns, rows)`, each chunk's rows are converted at
    once and only the result kept ("pieces"): holding millions of row lists
    until the end costs memory and garbage-collector passes that grow with them.
    """
    out: dict[tuple, dict] = {}
    for line in lines:
        if not line.strip():
            continue
        doc = json.loads(line)
        if "error" in doc:
            raise StoreError(f"{what}: {doc['error']}")
        for result in doc.get("results", ()):
            if "error" in result:
                raise StoreError(f"{what}: {result['error']}")
            for s in result.get("series", ()):
                key = (s["name"], tuple(sorted((s.get("tags") or {}).items())))
                rows = s.get("values") or []
                entry = out.setdefault(key, {"columns": s["columns"], "values": [], "pieces": []})
                if convert is None:
                    entry["values"].extend(rows)
                elif rows:
                    entry["pieces"].append(convert(s["name"], s["columns"], rows))
    return out


_TEXT = ("unit", "flag_test", "model_id", "model_version")


def _text_column(col: Sequence) -> np.ndarray:
    """Strings as an object array, "" as None, sharing one str object per distinct value."""
    distinct = set(col)
    if len(distinct) == 1:
        (v,) = distinct
        return np.full(len(col), v or None, dtype=object)
    canon = {v: v or None for v in distinct}
    return np.array([canon[v] for v in col], dtype=object)


def _piece(name: str, columns: list[str], rows: list[list]) -> dict:
    """One chunk of one series as numpy columns (spectra decoded)."""
    by = dict(zip(columns, zip(*rows)))
    n = len(rows)
    none = (None,) * n
    unc = np.array(by.get("uncertainty", none), dtype=np.float64)
    unc[unc < 0] = np.nan
    flag = by.get("flag", none)
    piece = {"time_ns": np.array(by["time"], dtype=np.int64), "uncertainty": unc,
             "flag": np.array(flag, dtype=np.float64) if None in flag else np.array(flag, dtype=np.uint8)}
    for c in _TEXT:
        piece[c] = _text_column(by.get(c, none))
    if name == lp.SPECTRUM:
        chunk_cols = [c for c in columns if c == "values" or c.startswith("values_")]
        piece["spectra"] = [lp.unpack_floats(lp.join_chunks(dict(zip(chunk_cols, parts)), "values"))
                            for parts in zip(*(by[c] for c in chunk_cols))]
        piece["axis"] = list(by.get("axis", none))
        piece["value"] = np.full(n, np.nan)
    else:
        value = np.array(by.get("value", none), dtype=np.float64)
        if "missing" in by:
            value[np.array([m is True for m in by["missing"]], dtype=bool)] = np.nan
        piece["value"] = value
    return piece


class InfluxStore:
    """Store backend on InfluxDB; writes over v1 `/write` (api=1) or influxdb-client (api=2)."""

    def __init__(self, target: InfluxTarget) -> None:
        self.t = target
        self.http = _Http(target)
        self._writer = None
        if target.api == 2:
            from influxdb_client import InfluxDBClient
            from influxdb_client.client.write_api import SYNCHRONOUS
            # Our own bounded retry loop (with_retries) replaces the client's:
            # WritesRetry's deadline is fixed when the client is made.
            self._client = InfluxDBClient(url=target.base_url, token=target.token or "", org=target.org,
                                          timeout=int(target.timeout_s * 1000), retries=False,
                                          verify_ssl=target.verify_tls)
            self._writer = self._client.write_api(write_options=SYNCHRONOUS)

    @property
    def where(self) -> str:
        return f"{self.t.base_url}/{self.t.database}"

    # -- writing -----------------------------------------------------------

    def write(self, observations: Sequence[Observation]) -> None:
        what = f"write {len(observations)} observations to {self.where}"
        try:
            for body in _requests(lp.encode(observations)):
                if self._writer is None:
                    params = {"db": self.t.database, "precision": "ns"}
                    if self.t.rp:
                        params["rp"] = self.t.rp
                    self.http.request("POST", "/write", what, fields=params, body=body)
                else:
                    with_retries(lambda: self._write_v2(body), what, self.t.base_url, self.t.retries)
        except StoreUnavailable:
            raise
        except StoreError as e:
            if "database not found" in str(e) or "bucket" in str(e) and "not found" in str(e):
                raise StoreError(f"{e} (create it first: CREATE DATABASE {self.t.database}, or "
                                 "'influx bucket create' on 2.x; docs/stores.md)") from None
            raise

    def _write_v2(self, body: bytes):
        from influxdb_client import WritePrecision
        from influxdb_client.rest import ApiException
        try:
            self._writer.write(bucket=self.t.database, org=self.t.org, record=body, write_precision=WritePrecision.NS)
        except ApiException as e:
            return _Answer(e.status or 500, (e.body or e.reason or "").encode() if isinstance(e.body or "", str) else e.body)
        return None

    def create_database(self) -> None:
        """CREATE DATABASE (InfluxDB 1.x; idempotent). For tests, benches and first set-up."""
        self.http.request("POST", "/query", f"create database {self.t.database}",
                          fields={"q": f"CREATE DATABASE {_quote_ident(self.t.database)}"})

    # -- reading -----------------------------------------------------------

    def raw_query(self, q: str, what: str, chunked: bool = True) -> Iterator[bytes]:
        params = {"db": self.t.database, "q": q, "epoch": "ns"}
        if self.t.rp:
            params["rp"] = self.t.rp
        if chunked:
            params.update(chunked="true", chunk_size=str(QUERY_CHUNK_ROWS))
        r = self.http.request("POST", "/query", what, fields=params, preload=False)
        try:
            yield from _lines(_prefetch(r, what, self.t.base_url, self.t.timeout_s))
        finally:
            r.release_conn()

    def columns(self, selection: Selection) -> Iterator[SeriesData]:
        what = f"query {self.where}"
        found = parse_results(self.raw_query(influxql_select(selection), what), what, convert=_piece)
        items = []
        for (name, tags), data in found.items():
            t = dict(tags)
            depth = float(t["depth_cm"]) if t.get("depth_cm") else None
            try:
                key = (t["site"], t["gateway"], t["probe"], depth, t["quantity"], Source(t["source"]))
            except (KeyError, ValueError):
                log.warning("%s: skipping series %s %s without Humus tags", what, name, t)
                continue
            if data["pieces"]:
                items.append((series_sort_key(key[:5] + (key[5].value,)), key, data["pieces"]))
        items.sort(key=lambda x: x[0])
        series = [self._to_series(key, pieces) for _, key, pieces in items]
        self._attach_axes(series, what)
        remaining = selection.limit
        for s in series:
            if remaining is not None:
                if remaining <= 0:
                    return
                if len(s) > remaining:
                    s = _head(s, remaining)
                remaining -= len(s)
            yield s

    @staticmethod
    def _to_series(key: tuple, pieces: list[dict]) -> SeriesData:
        def cat(name):
            return np.concatenate([p[name] for p in pieces]) if len(pieces) > 1 else pieces[0][name]
        flag = cat("flag")
        if flag.dtype != np.uint8:  # a point without flag: not evaluated
            flag = np.where(np.isnan(flag), 2, flag).astype(np.uint8)
        s = SeriesData(*key, time_ns=cat("time_ns"), value=cat("value"), uncertainty=cat("uncertainty"), flag=flag,
                       unit=cat("unit"), flag_test=cat("flag_test"), model_id=cat("model_id"),
                       model_version=cat("model_version"))
        if "spectra" in pieces[0]:
            s.spectra = [x for p in pieces for x in p["spectra"]]
            s.wavelengths = [x for p in pieces for x in p["axis"]]  # digests until _attach_axes
        return s

    def _attach_axes(self, series: list[SeriesData], what: str) -> None:
        digests = {d for s in series if s.spectra is not None for d in s.wavelengths}
        if not digests:
            return
        q = (f"SELECT * FROM {_quote_ident(lp.AXIS)} WHERE "
             + " OR ".join(f"\"axis\"={_quote_str(d)}" for d in sorted(digests))
             + " GROUP BY \"axis\" ORDER BY time DESC LIMIT 1")
        found = parse_results(self.raw_query(q, what, chunked=False), what)
        axes = {}
        for (_, tags), data in found.items():
            row = dict(zip(data["columns"], data["values"][0]))
            axes[dict(tags)["axis"]] = lp.unpack_floats(lp.join_chunks(row, "wavelengths"))
        missing = digests - axes.keys()
        if missing:
            raise StoreError(f"{what}: wavelength axis {sorted(missing)[0][:12]}... of stored spectra not found")
        for s in series:
            if s.spectra is not None:
                s.wavelengths = [axes[d] for d in s.wavelengths]

    def query(self, selection: Selection) -> Iterable[Observation]:
        for data in self.columns(selection):
            yield from observations_of(data)

    def close(self) -> None:
        self.http.close()
        if self._writer is not None:
            self._writer.close()
            self._client.close()


_END = object()


def _prefetch(r, what: str, where: str, timeout_s: float, depth: int = 32) -> Iterator[bytes]:
    """The response body in pieces, read by a thread while the caller parses.

    InfluxDB streams a chunked answer as it computes it; reading it in the
    same thread as json.loads would add the two times instead of overlapping
    them (socket reads release the GIL). The queue is bounded (depth MB).
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def reader() -> None:
        try:
            for piece in r.stream(1 << 20):
                while not stop.is_set():
                    try:
                        q.put(piece, timeout=0.5)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            item: object = _END
        except Exception as e:  # noqa: BLE001 - handed to the caller, or moot once it stopped reading
            if stop.is_set():
                return
            item = StoreUnavailable(f"{what}: connection to {where} lost ({type(e).__name__}: {e})")
        while not stop.is_set():
            try:
                q.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    thread = threading.Thread(target=reader, name="influx-query-reader", daemon=True)
    thread.start()
    try:
        while True:
            try:
                item = q.get(timeout=timeout_s + 5)
            except queue.Empty:
                raise StoreUnavailable(f"{what}: {where} sent nothing for {timeout_s + 5:.0f} s") from None
            if item is _END:
                return
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        stop.set()
        if thread.is_alive():
            r.close()  # the caller stopped early: unblock the reader's socket read
        thread.join(5)


def _lines(pieces: Iterable[bytes]) -> Iterator[bytes]:
    """Split a byte stream into lines (a chunked /query answer is one JSON document per line)."""
    pending: list[bytes] = []
    for piece in pieces:
        *done, rest = piece.split(b"\n")
        if done:
            done[0] = b"".join(pending) + done[0]
            pending = []
            yield from done
        pending.append(rest)
    last = b"".join(pending)
    if last:
        yield last


def _requests(lines: list[str]) -> Iterator[bytes]:
    """Request bodies of at most LINES_PER_REQUEST lines and about MAX_BODY_BYTES (spectra are long lines)."""
    batch: list[str] = []
    size = 0
    for line in lines:
        if batch and (len(batch) >= LINES_PER_REQUEST or size + len(line) > MAX_BODY_BYTES):
            yield ("\n".join(batch) + "\n").encode()
            batch, size = [], 0
        batch.append(line)
        size += len(line) + 1
    if batch:
        yield ("\n".join(batch) + "\n").encode()


class _Answer:
    """A v2 client error turned into what with_retries reads."""

    def __init__(self, status: int, data: bytes) -> None:
        self.status, self.data = status, data or b""


def _head(s: SeriesData, n: int) -> SeriesData:
    return SeriesData(s.site, s.gateway, s.probe, s.depth_cm, s.quantity, s.source, s.time_ns[:n], s.value[:n],
                      s.uncertainty[:n], s.flag[:n], s.unit[:n], s.flag_test[:n], s.model_id[:n],
                      s.model_version[:n], None if s.spectra is None else s.spectra[:n],
                      None if s.wavelengths is None else s.wavelengths[:n])
