"""InfluxDB stores: v1 `/write` (InfluxDB 1.x) or the v2 write API through influxdb-client,
both queried in InfluxQL over `/query` (InfluxDB 1.x, 2.x with DBRP mapping, 3.x).

Point layout: observatory.stores.lineprotocol. URLs and credentials: docs/stores.md.

Errors: a refused connection, a timeout or a 5xx answer raise StoreUnavailable
(after a few retries with exponential back-off: the ingest worker retries the
whole batch later, and the store is idempotent); a 400 or 422 answer (bad
data) raises StoreRejected, other 4xx answers (unknown database, bad
credentials) StoreError, each with the server's message.
A write split into several requests that fails half way has stored a part;
writing the batch again is harmless.
"""

from __future__ import annotations

import base64
import json
import logging
import queue
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import urllib3

from humus.obsrows import ObservationRows
from humus.records import Observation, Source
from observatory.store import (Selection, SeriesData, StoreError, StoreRejected, StoreUnavailable, observations_of,
                               series_sort_key)
from observatory.stores import lineprotocol as lp

log = logging.getLogger(__name__)

LINES_PER_REQUEST = 5000
"""InfluxDB's recommended write batch size (docs: "Optimize writes", 5,000 lines)."""
PARALLEL_REQUESTS = 4
"""Requests of one write sent side by side (measured: bench/ingest.py, docs/ingest.md)."""
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
            cert_reqs="CERT_REQUIRED" if target.verify_tls else "CERT_NONE", maxsize=PARALLEL_REQUESTS)
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


DATA_REFUSALS = frozenset({400, 422})
"""Answers that blame the data: 400 (a line that does not parse, a field type conflict, a partial
write; InfluxDB 1.x "Write HTTP endpoint" and 2.x "/api/v2/write" references) and 422 (2.x:
unprocessable, e.g. points outside the retention period). 401, 403, 404 (credentials, unknown
database or bucket) and 413 (the server's body limit) blame the store's set-up instead."""


def with_retries(once: Callable, what: str, where: str, attempts: int):
    """Call `once()` up to `attempts` times with back-off 0.2, 0.8, 3.2 s... on outages; map errors:
    StoreRejected for DATA_REFUSALS, StoreError for other 4xx, StoreUnavailable once outages persist."""
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
            if status in DATA_REFUSALS:
                raise StoreRejected(f"{what}: InfluxDB at {where} refused the data ({status}): {text}")
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


MEASUREMENTS = (lp.SCALAR, lp.SPECTRUM, lp.LEGACY_SCALAR, lp.LEGACY_SPECTRUM)
"""Read both point layouts: an archive written before schema 2 answers until it is migrated."""


def influxql_select(sel: Selection, measurements: Sequence[str] = MEASUREMENTS) -> str:
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


def result_chunks(lines: Iterable[bytes | str], what: str) -> Iterator[list[dict]]:
    """The series of each chunk of a (chunked) /query JSON answer, one list per chunk, as they arrive.

    An error in the answer, for the whole query or one statement, raises
    StoreError naming `what`: never taken for an empty result.
    """
    for line in lines:
        if not line.strip():
            continue
        doc = json.loads(line)
        if "error" in doc:
            raise StoreError(f"{what}: {doc['error']}")
        series: list[dict] = []
        for result in doc.get("results", ()):
            if "error" in result:
                raise StoreError(f"{what}: {result['error']}")
            series.extend(result.get("series", ()))
        yield series


def parse_results(lines: Iterable[bytes], what: str, convert: Callable | None = None) -> dict[tuple, dict]:
    """Merge a (chunked) /query JSON answer into {(measurement, tags): {"columns", "values" or "pieces"}}.

    With `convert(name, tags, columns, rows)`, each chunk's rows are converted
    at once and only the result kept ("pieces"): holding millions of row lists
    until the end costs memory and garbage-collector passes that grow with them.
    """
    out: dict[tuple, dict] = {}
    for chunk in result_chunks(lines, what):
        for s in chunk:
            tags = s.get("tags") or {}
            key = (s["name"], tuple(sorted(tags.items())))
            rows = s.get("values") or []
            entry = out.setdefault(key, {"columns": s["columns"], "values": [], "pieces": []})
            if convert is None:
                entry["values"].extend(rows)
            elif rows:
                entry["pieces"].append(convert(s["name"], tags, s["columns"], rows))
    return out


def _text_column(col: Sequence) -> np.ndarray:
    """Strings as an object array, "" as None, sharing one str object per distinct value."""
    distinct = set(col)
    if len(distinct) == 1:
        (v,) = distinct
        return np.full(len(col), v or None, dtype=object)
    canon = {v: v or None for v in distinct}
    return np.array([canon[v] for v in col], dtype=object)


def _piece(name: str, tags: dict, columns: list[str], rows: list[list]) -> dict:
    """One chunk of one InfluxDB series as numpy columns (spectra decoded), either point layout."""
    by = dict(zip(columns, zip(*rows)))
    n = len(rows)
    none = (None,) * n
    legacy = name in (lp.LEGACY_SCALAR, lp.LEGACY_SPECTRUM)
    unc = np.array(by.get("uncertainty", none), dtype=np.float64)
    flag = by.get("flag", none)
    piece = {"time_ns": np.array(by["time"], dtype=np.int64), "uncertainty": unc,
             "flag": np.array(flag, dtype=np.float64) if None in flag else np.array(flag, dtype=np.uint8)}
    if legacy:
        unc[unc < 0] = np.nan  # layout 1 wrote -1 for "no uncertainty"
        for c in ("unit", "flag_test", "model_id", "model_version"):  # string fields in layout 1
            piece[c] = _text_column(by.get(c, none))
        absent = None
        piece["signed"] = np.full(n, -1, dtype=np.int8)  # layout 1 kept no verification: unknown
    else:
        for c in ("unit", "model_id", "model_version"):
            piece[c] = np.full(n, tags.get(c) or None, dtype=object)
        qc = np.array(by.get("qc", none), dtype=np.float64)
        qc = np.where(np.isnan(qc), 0, qc).astype(np.int64)
        absent = qc & 3
        unc[(absent & lp.ABSENT_UNCERTAINTY) != 0] = np.nan
        piece["flag_test"] = _test_names((qc >> 2) & lp.TEST_MASK, by.get("flag_test", none))
        piece["signed"] = ((qc & lp.SIGNED) != 0).astype(np.int8)
    if name in (lp.SPECTRUM, lp.LEGACY_SPECTRUM):
        chunk_cols = [c for c in columns if c == "values" or c.startswith("values_")]
        bands = by.get("n_bands", none)
        piece["spectra"] = [
            lp.unpack_floats(lp.join_chunks(dict(zip(chunk_cols, parts)), "values",
                                            None if nb is None else lp.chunks_for(nb)))
            for parts, nb in zip(zip(*(by[c] for c in chunk_cols)), bands)]
        piece["axis"] = list(by.get("axis", none))
        piece["value"] = np.full(n, np.nan)
    else:
        value = np.array(by.get("value", none), dtype=np.float64)
        if legacy and "missing" in by:
            value[np.array([m is True for m in by["missing"]], dtype=bool)] = np.nan
        elif absent is not None:
            value[(absent & lp.ABSENT_VALUE) != 0] = np.nan
        piece["value"] = value
    return piece


def _test_names(codes: np.ndarray, named: Sequence) -> np.ndarray:
    """flag_test of layout 2 from the codes in qc (and the string field where the code says so)."""
    distinct = np.unique(codes)
    if len(distinct) == 1 and distinct[0] != lp.TEST_NAMED:
        return np.full(len(codes), lp.TEST_NAMES.get(int(distinct[0])), dtype=object)
    names = np.empty(len(codes), dtype=object)
    for code in distinct:
        at = codes == code
        names[at] = lp.TEST_NAMES.get(int(code))
    at = np.flatnonzero(codes == lp.TEST_NAMED)
    names[at] = [named[i] or None for i in at]
    return names


_VERSION_PARTS = re.compile(r"\d+|\D+")


def version_order(version: str | None) -> tuple:
    """A model version as a sort key, numbers compared as numbers: "2026.10" after "2026.9"."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in _VERSION_PARTS.findall(version or ""))


def _precedence(name: str, tags: dict) -> tuple:
    """Of the points of one series and time in several InfluxDB series, the highest wins: layout 2
    over layout 1, then the latest model version, model id and unit (a rewrite that changed a tag)."""
    return (name in (lp.SCALAR, lp.SPECTRUM), version_order(tags.get("model_version")),
            tags.get("model_id") or "", tags.get("unit") or "")


_COLUMNS = ("time_ns", "value", "uncertainty", "flag", "unit", "flag_test", "model_id", "model_version", "signed")


def _merge(sources: list[tuple[tuple, list[dict]]]) -> list[dict]:
    """Pieces of one series key from several InfluxDB series, as one piece in time order, one point per time."""
    if len(sources) == 1:
        return sources[0][1]
    sources.sort(key=lambda x: x[0])
    spectral = any("spectra" in p for _, pieces in sources for p in pieces)
    cols: dict[str, list] = {c: [] for c in _COLUMNS}
    rank, spectra, axes = [], [], []
    for i, (_, pieces) in enumerate(sources):
        for p in pieces:
            n = len(p["time_ns"])
            for c in _COLUMNS:
                cols[c].append(p[c] if c != "flag" else p[c].astype(np.float64))
            rank.append(np.full(n, i))
            if spectral:
                spectra.extend(p.get("spectra") or [None] * n)
                axes.extend(p.get("axis") or [None] * n)
    t = np.concatenate(cols["time_ns"])
    r = np.concatenate(rank)
    order = np.lexsort((-r, t))  # by time, the highest precedence first
    keep = order[np.r_[True, t[order][1:] != t[order][:-1]]]
    out = {c: np.concatenate(v)[keep] for c, v in cols.items()}
    if spectral:
        out["spectra"] = [spectra[i] for i in keep]
        out["axis"] = [axes[i] for i in keep]
    return [out]


class InfluxStore:
    """Store backend on InfluxDB; writes over v1 `/write` (api=1) or influxdb-client (api=2)."""

    def __init__(self, target: InfluxTarget) -> None:
        self.t = target
        self.http = _Http(target)
        self._writer = None
        self._pool: ThreadPoolExecutor | None = None
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
        # Encoded whole before the first request: what line protocol cannot carry raises
        # StoreRejected here, and nothing of the batch is sent (see lineprotocol).
        self.write_async(observations).result()

    def write_async(self, observations: Sequence[Observation]) -> "PendingWrite":
        """Encode now (what line protocol cannot carry raises StoreRejected here, before any request) and
        send in the background; `result()` waits for every request and raises as `write` would.

        The ingest worker prepares its next write while this one is on the wire (observatory.worker)."""
        return self.send_lines(lp.encode(observations), f"write {len(observations)} observations to {self.where}")

    def write_lines(self, lines: list[str], what: str) -> None:
        """Send lines of line protocol (made by observatory.stores.lineprotocol) in requests of 5,000."""
        self.send_lines(lines, what).result()

    def send_lines(self, lines: list[str], what: str) -> "PendingWrite":
        """Start sending lines in requests of 5,000, up to PARALLEL_REQUESTS side by side: the server
        parses them on several cores while the worker goes on, instead of one after the other
        (docs/ingest.md, sizing). Requests of several writes queue behind each other in that order."""
        bodies = list(_requests(lines))
        if self._pool is None:
            self._pool = ThreadPoolExecutor(PARALLEL_REQUESTS, thread_name_prefix="influx-write")
        return PendingWrite([self._pool.submit(self._send, body, what) for body in bodies], self.t.database)

    def prepare(self, observations: Sequence[Observation]) -> None:
        """Encode a decoded batch ahead of its write (called by the ingest worker as batches arrive)."""
        if isinstance(observations, ObservationRows):
            lp.prepare(observations)

    def _send(self, body: bytes, what: str) -> None:
        if self._writer is None:
            params = {"db": self.t.database, "precision": "ns"}
            if self.t.rp:
                params["rp"] = self.t.rp
            self.http.request("POST", "/write", what, fields=params, body=body)
        else:
            with_retries(lambda: self._write_v2(body), what, self.t.base_url, self.t.retries)

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
        by_key: dict[tuple, list[tuple[tuple, list[dict]]]] = {}
        for (name, tags), data in found.items():
            t = dict(tags)
            try:
                depth = float(t["depth_cm"]) if t.get("depth_cm") else None
                key = (t["site"], t["gateway"], t["probe"], depth, t["quantity"], Source(t["source"]))
            except (KeyError, ValueError):
                log.warning("%s: skipping series %s %s without Humus tags", what, name, t)
                continue
            if data["pieces"]:
                by_key.setdefault(key, []).append((_precedence(name, t), data["pieces"]))
        items = [(series_sort_key(key[:5] + (key[5].value,)), key, _merge(sources))
                 for key, sources in by_key.items()]
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
        signed = cat("signed")  # 1, 0, or -1 where a layout 1 point cannot say
        s = SeriesData(*key, time_ns=cat("time_ns"), value=cat("value"), uncertainty=cat("uncertainty"), flag=flag,
                       unit=cat("unit"), flag_test=cat("flag_test"), model_id=cat("model_id"),
                       model_version=cat("model_version"), signed=None if (signed < 0).any() else signed == 1)
        if any("spectra" in p for p in pieces):
            s.spectra = [x for p in pieces for x in p.get("spectra") or [None] * len(p["time_ns"])]
            s.wavelengths = [x for p in pieces  # digests until _attach_axes
                             for x in p.get("axis") or [None] * len(p["time_ns"])]
        return s

    def _attach_axes(self, series: list[SeriesData], what: str) -> None:
        digests = {d for s in series if s.spectra is not None for d in s.wavelengths if d is not None}
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
                s.wavelengths = [None if d is None else axes[d] for d in s.wavelengths]

    def query(self, selection: Selection) -> Iterable[Observation]:
        for data in self.columns(selection):
            yield from observations_of(data)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
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
    for i in range(0, len(lines), LINES_PER_REQUEST):
        chunk = lines[i:i + LINES_PER_REQUEST]
        body = "\n".join(chunk) + "\n"
        if len(body) <= MAX_BODY_BYTES:  # the common case: short scalar lines
            yield body.encode()
            continue
        del body
        batch: list[str] = []
        size = 0
        for line in chunk:
            if batch and size + len(line) > MAX_BODY_BYTES:
                yield ("\n".join(batch) + "\n").encode()
                batch, size = [], 0
            batch.append(line)
            size += len(line) + 1
        if batch:
            yield ("\n".join(batch) + "\n").encode()


class PendingWrite:
    """The requests of one write on their way (InfluxStore.send_lines)."""

    def __init__(self, requests: list, database: str) -> None:
        self.requests, self.database = requests, database

    def done(self) -> bool:
        return all(f.done() for f in self.requests)

    def result(self) -> None:
        """Wait for every request; all must succeed. An outage wins over a refusal in what is raised
        (the batch is then held, not dead-lettered)."""
        errors = []
        for f in self.requests:
            try:
                f.result()
            except Exception as e:  # noqa: BLE001 - sorted below
                errors.append(e)
        if not errors:
            return
        e = next((e for e in errors if isinstance(e, StoreUnavailable)), errors[0])
        if isinstance(e, StoreError) and not isinstance(e, (StoreUnavailable, StoreRejected)) and (
                "database not found" in str(e) or "bucket" in str(e) and "not found" in str(e)):
            raise StoreError(f"{e} (create it first: CREATE DATABASE {self.database}, or "
                             "'influx bucket create' on 2.x; docs/stores.md)") from None
        raise e


class _Answer:
    """A v2 client error turned into what with_retries reads."""

    def __init__(self, status: int, data: bytes) -> None:
        self.status, self.data = status, data or b""


def _head(s: SeriesData, n: int) -> SeriesData:
    return SeriesData(s.site, s.gateway, s.probe, s.depth_cm, s.quantity, s.source, s.time_ns[:n], s.value[:n],
                      s.uncertainty[:n], s.flag[:n], s.unit[:n], s.flag_test[:n], s.model_id[:n],
                      s.model_version[:n], None if s.spectra is None else s.spectra[:n],
                      None if s.wavelengths is None else s.wavelengths[:n],
                      None if s.signed is None else s.signed[:n])
