"""Set up an InfluxDB 1.x for Humus over its HTTP API (Debian's `influxdb` has no `influx` CLI).

What it makes, each step idempotent (a second run changes nothing):

- an admin user, when the server has none yet (InfluxDB 1.x lets an
  anonymous client create the first admin even with authentication on);
- the database and its default retention policy (duration, and a shard
  group duration suited to it: InfluxDB 1.x "Schema and data layout",
  shard group duration recommendations, 52 weeks for an infinite policy);
- a write-only user for ingest (`GRANT WRITE`) and a read-only one for
  researchers (`GRANT READ`), any other privilege on the database revoked,
  their credentials in TOML files the store reads (`?credentials=PATH`);
- then it checks that authentication is on: an anonymous query must be
  refused, or the passwords protect nothing.

Statements and privileges: InfluxDB 1.x "Authentication and authorization"
(user management statements over `/query`).
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import urllib3

from humus.broker_users import new_password
from humus.private_files import write_private


class SetupError(Exception):
    """One line saying what failed, where, and what to check."""


@dataclass(frozen=True)
class Account:
    user: str
    credentials: Path          # TOML with user/password, the format the store reads
    owner: str | None = None   # the service user that must read it (mode 0600, owned by it)


@dataclass
class InfluxSetup:
    base_url: str
    database: str
    admin: Account
    writer: Account
    reader: Account
    rp: str = "humus"
    duration: str = "INF"
    shard_duration: str = "52w"
    verify_tls: bool = True
    actions: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=5.0, read=30.0),
                                        cert_reqs="CERT_REQUIRED" if self.verify_tls else "CERT_NONE")

    # -- HTTP --------------------------------------------------------------------------------------

    def query(self, statement: str, auth: tuple[str, str] | None, what: str) -> list[dict]:
        """Run one InfluxQL statement; its `series` (or [] for statements without a result)."""
        status, doc = self._post(statement, auth)
        if status == 401 or status == 403:
            raise SetupError(f"InfluxDB at {self.base_url} refused {what}: {_err(doc)} "
                             "(check the admin credentials file)")
        if status != 200:
            raise SetupError(f"InfluxDB at {self.base_url} answered {status} to {what}: {_err(doc)}")
        result = (doc.get("results") or [{}])[0]
        if "error" in result:
            raise SetupError(f"InfluxDB at {self.base_url}: {what}: {result['error']}")
        return result.get("series", [])

    def _post(self, statement: str, auth: tuple[str, str] | None) -> tuple[int, dict]:
        headers = urllib3.make_headers(basic_auth=f"{auth[0]}:{auth[1]}") if auth else {}
        try:
            r = self.http.request("POST", f"{self.base_url}/query", fields={"q": statement}, headers=headers,
                                  encode_multipart=False)
        except urllib3.exceptions.HTTPError as e:
            raise SetupError(f"InfluxDB at {self.base_url} is unreachable ({e}); is influxd running?") from None
        try:
            return r.status, json.loads(r.data or b"{}")
        except ValueError:
            return r.status, {"error": r.data.decode("utf-8", "replace")[:200]}

    def login_works(self, auth: tuple[str, str]) -> bool:
        status, doc = self._post("SHOW DATABASES", auth)
        return status == 200 and "error" not in (doc.get("results") or [{}])[0]

    # -- steps -------------------------------------------------------------------------------------

    def run(self) -> list[str]:
        admin = self._admin()
        self._database(admin)
        self._account(admin, self.writer, "WRITE")
        self._account(admin, self.reader, "READ")
        self._check_auth_on()
        return self.actions

    def _admin(self) -> tuple[str, str]:
        existing = _read_credentials(self.admin.credentials)
        if existing:
            if not self.login_works(existing):
                raise SetupError(f"InfluxDB at {self.base_url} refuses the admin user {existing[0]} of "
                                 f"{self.admin.credentials}; fix that file or the user's password")
            return existing
        password = new_password()
        # The file first: an admin whose password was lost cannot be recovered without restarting
        # the server with authentication off.
        _write_credentials(self.admin, password)
        try:
            self.query(f"CREATE USER {_ident(self.admin.user)} WITH PASSWORD {_str(password)} WITH ALL PRIVILEGES",
                       None, f"creating the admin user {self.admin.user}")
        except SetupError as e:
            self.admin.credentials.unlink(missing_ok=True)
            raise SetupError(f"{e}; if the server already has an admin, put its user and password in "
                             f"{self.admin.credentials} (TOML: user = \"...\", password = \"...\")") from None
        self.actions.append(f"created admin user {self.admin.user} ({self.admin.credentials})")
        return self.admin.user, password

    def _database(self, admin: tuple[str, str]) -> None:
        names = {row[0] for s in self.query("SHOW DATABASES", admin, "listing databases") for row in
                 s.get("values") or []}
        if self.database not in names:
            self.query(f"CREATE DATABASE {_ident(self.database)}", admin, f"creating database {self.database}")
            self.actions.append(f"created database {self.database}")
        rps = {}
        for s in self.query(f"SHOW RETENTION POLICIES ON {_ident(self.database)}", admin, "listing retention policies"):
            cols = s["columns"]
            for row in s.get("values") or []:
                rec = dict(zip(cols, row))
                rps[rec["name"]] = rec
        want = (f"DURATION {self.duration} REPLICATION 1 SHARD DURATION {self.shard_duration} DEFAULT")
        on = f"{_ident(self.rp)} ON {_ident(self.database)}"
        if self.rp not in rps:
            self.query(f"CREATE RETENTION POLICY {on} {want}", admin, f"creating retention policy {self.rp}")
            self.actions.append(f"created retention policy {self.rp} ({self.duration}, shards {self.shard_duration}, "
                                "default)")
            return
        rp = rps[self.rp]
        if (_hours(rp["duration"]) != _hours(self.duration) or not rp.get("default")
                or _hours(rp["shardGroupDuration"]) != _hours(self.shard_duration)):
            self.query(f"ALTER RETENTION POLICY {on} {want}", admin, f"altering retention policy {self.rp}")
            self.actions.append(f"altered retention policy {self.rp} to {self.duration}, shards {self.shard_duration}, "
                                "default")

    def _account(self, admin: tuple[str, str], acct: Account, privilege: str) -> None:
        users = {row[0]: row[1] for s in self.query("SHOW USERS", admin, "listing users") for row in
                 s.get("values") or []}
        saved = _read_credentials(acct.credentials)
        if acct.user not in users:
            password = new_password()
            self.query(f"CREATE USER {_ident(acct.user)} WITH PASSWORD {_str(password)}", admin,
                       f"creating user {acct.user}")
            _write_credentials(acct, password)
            self.actions.append(f"created user {acct.user} ({acct.credentials})")
        elif not saved or saved[0] != acct.user or not self.login_works(saved):
            password = new_password()
            self.query(f"SET PASSWORD FOR {_ident(acct.user)} = {_str(password)}", admin,
                       f"setting the password of {acct.user}")
            _write_credentials(acct, password)
            self.actions.append(f"reset the password of {acct.user} ({acct.credentials})")
        if users.get(acct.user):
            self.query(f"REVOKE ALL PRIVILEGES FROM {_ident(acct.user)}", admin, f"revoking admin from {acct.user}")
            self.actions.append(f"revoked admin privileges from {acct.user}")
        grants = {row[0]: row[1] for s in self.query(f"SHOW GRANTS FOR {_ident(acct.user)}", admin,
                                                     f"listing grants of {acct.user}") for row in s.get("values") or []}
        if grants.get(self.database, "").upper() != privilege:
            self.query(f"REVOKE ALL ON {_ident(self.database)} FROM {_ident(acct.user)}", admin,
                       f"revoking privileges of {acct.user}")
            self.query(f"GRANT {privilege} ON {_ident(self.database)} TO {_ident(acct.user)}", admin,
                       f"granting {privilege} to {acct.user}")
            self.actions.append(f"granted {acct.user} {privilege} only on {self.database}")

    def _check_auth_on(self) -> None:
        status, doc = self._post("SHOW DATABASES", None)
        if status == 200 and "error" not in (doc.get("results") or [{}])[0]:
            raise SetupError(f"InfluxDB at {self.base_url} answers anonymous queries: authentication is off, so "
                             "these users protect nothing; set auth-enabled = true in the [http] section of "
                             "/etc/influxdb/influxdb.conf, restart influxdb and run this again")


def _err(doc: dict) -> str:
    return str(doc.get("error") or (doc.get("results") or [{}])[0].get("error") or doc)[:200]


def _ident(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _str(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _hours(text: str) -> float:
    """'INF', '0s', '52w', '8736h0m0s' -> hours (0 = infinite), to compare what we asked with what SHOW gives."""
    t = text.strip().lower()
    if t in ("inf", "0s", "0"):
        return 0.0
    units = {"w": 168.0, "d": 24.0, "h": 1.0, "m": 1 / 60, "s": 1 / 3600}
    total, num = 0.0, ""
    for ch in t:
        if ch.isdigit() or ch == ".":
            num += ch
        elif ch in units and num:
            total += float(num) * units[ch]
            num = ""
        else:
            raise SetupError(f"duration {text!r}: expected INF or e.g. 520w, 3650d, 8736h")
    if num:
        raise SetupError(f"duration {text!r}: a number needs a unit (w, d, h, m, s)")
    return total


def _read_credentials(path: Path) -> tuple[str, str] | None:
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise SetupError(f"credentials file {path}: cannot read it ({e}); expected user = \"...\", "
                         "password = \"...\"") from None
    if not isinstance(doc.get("user"), str) or not isinstance(doc.get("password"), str):
        raise SetupError(f"credentials file {path}: expected user = \"...\" and password = \"...\"")
    return doc["user"], doc["password"]


def _write_credentials(acct: Account, password: str) -> None:
    write_private(acct.credentials, f'user = "{acct.user}"\npassword = "{password}"\n', 0o600, owner=acct.owner)
