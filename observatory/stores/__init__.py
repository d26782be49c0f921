"""Open a store from its URL (docs/stores.md).

    sqlite:PATH                              embedded archive (sqlite:///abs/path also works)
    influxdb://HOST[:PORT]/DATABASE[?rp=RP]  InfluxDB 1.x: v1 /write, InfluxQL /query (http)
    influxdbs://...                          the same over https (also https://HOST:PORT/DATABASE)
    influxdb2://HOST[:PORT]/BUCKET?org=ORG   InfluxDB 2.x/3.x: v2 write API via influxdb-client,
                                             InfluxQL over /query through the bucket's DBRP mapping
    influxdb2s://...                         the same over https

Credentials never go in the URL (it ends up in process lists, logs and
shell history): HUMUS_INFLUX_TOKEN, or HUMUS_INFLUX_USER and
HUMUS_INFLUX_PASSWORD, or a TOML file named by `?credentials=PATH` or
HUMUS_INFLUX_CREDENTIALS with `token = "..."` or `user`/`password`.
Environment variables win over the file.
Other parameters: `timeout=SECONDS` (30), `retries=N` (3), `tls_verify=false`.
"""

from __future__ import annotations

import logging
import os
import stat
import tomllib
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from observatory.store import Store, StoreError

log = logging.getLogger(__name__)

INFLUX_SCHEMES = {"influxdb": (1, "http"), "influxdbs": (1, "https"), "http": (1, "http"),
                  "https": (1, "https"), "influxdb2": (2, "http"), "influxdb2s": (2, "https")}
_PARAMS = {"rp", "org", "credentials", "timeout", "retries", "tls_verify"}


def open_store(url: str, create: bool = True) -> Store:
    """The store a URL names. `create=False` (queries) refuses to make a new SQLite file."""
    if not isinstance(url, str) or ":" not in url:
        raise StoreError(f"store URL {url!r} has no scheme; expected sqlite:PATH or an InfluxDB URL (docs/stores.md)")
    scheme = url.split(":", 1)[0].lower()
    if scheme == "sqlite":
        path = url.split(":", 1)[1]
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise StoreError(f"store URL {url!r} names no file; expected sqlite:PATH")
        from observatory.stores.sqlite import SqliteStore
        return SqliteStore(Path(path).expanduser(), create=create)
    if scheme in INFLUX_SCHEMES:
        from observatory.stores.influx import InfluxStore
        return InfluxStore(influx_target(url))
    raise StoreError(f"store URL scheme {scheme!r} is unknown; expected sqlite:, influxdb://, influxdbs://, "
                     "influxdb2:// or influxdb2s:// (docs/stores.md)")


def influx_target(url: str):
    from observatory.stores.influx import InfluxTarget

    try:
        parts = urlsplit(url)
    except ValueError as e:
        raise StoreError(f"store URL {url!r} is malformed ({e}); expected SCHEME://HOST:PORT/DATABASE") from None
    api, http_scheme = INFLUX_SCHEMES[parts.scheme.lower()]
    if parts.username or parts.password:
        raise StoreError(f"store URL for {parts.hostname} carries credentials; put them in HUMUS_INFLUX_TOKEN "
                         "(or HUMUS_INFLUX_USER/HUMUS_INFLUX_PASSWORD) or a credentials file, never in the URL")
    if not parts.hostname:
        raise StoreError(f"store URL {url!r} names no host; expected {parts.scheme}://HOST:PORT/DATABASE")
    try:
        port = parts.port or 8086
    except ValueError:
        raise StoreError(f"store URL {url!r} has a bad port; expected a number 1-65535") from None
    database = parts.path.strip("/")
    if not database or "/" in database:
        raise StoreError(f"store URL {url!r} names no database; expected {parts.scheme}://HOST:PORT/DATABASE")
    params = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    unknown = set(params) - _PARAMS
    if unknown:
        raise StoreError(f"store URL parameter {sorted(unknown)[0]!r} is unknown; known: {', '.join(sorted(_PARAMS))}")
    creds = _credentials(params.get("credentials") or os.environ.get("HUMUS_INFLUX_CREDENTIALS"))
    for key in ("token", "user", "password"):
        env = os.environ.get(f"HUMUS_INFLUX_{key.upper()}")
        if env:
            creds[key] = env
    org = params.get("org") or os.environ.get("HUMUS_INFLUX_ORG")
    if api == 2 and not org:
        raise StoreError(f"store URL {url!r} needs ?org=ORG (or HUMUS_INFLUX_ORG) for the v2 write API")
    try:
        timeout = float(params.get("timeout", 30))
        retries = int(params.get("retries", 3))
    except ValueError:
        raise StoreError(f"store URL {url!r}: timeout must be seconds and retries an integer") from None
    if not 0.1 <= timeout <= 3600 or not 0 <= retries <= 100:   # also refuses nan
        raise StoreError(f"store URL {url!r}: expected timeout 0.1 to 3600 seconds and retries 0 to 100")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return InfluxTarget(
        base_url=f"{http_scheme}://{host}:{port}", database=database, api=api, rp=params.get("rp") or None,
        org=org, token=creds.get("token"), user=creds.get("user"), password=creds.get("password"),
        timeout_s=timeout, retries=retries,
        verify_tls=params.get("tls_verify", "true").lower() not in ("false", "0", "no"))


def _credentials(path: str | None) -> dict[str, str]:
    if not path:
        return {}
    from humus.file_checks import FileProblem, read_regular

    p = Path(path).expanduser()
    try:
        doc = tomllib.loads(read_regular(p, 65536).decode("utf-8"))   # never a FIFO or /dev/zero
    except FileProblem as e:
        raise StoreError(f"credentials file {p}: cannot read it ({e.reason})") from None
    except UnicodeDecodeError:
        raise StoreError(f"credentials file {p}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise StoreError(f"credentials file {p}: not TOML ({e}); expected token = \"...\" or user/password") from None
    unknown = set(doc) - {"token", "user", "password"}
    if unknown or not all(isinstance(v, str) for v in doc.values()):
        raise StoreError(f"credentials file {p}: expected only string keys token, user, password")
    if p.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("credentials file %s is readable by others; chmod 600 it", p)
    return dict(doc)
