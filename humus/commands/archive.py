"""`humus archive`: set up and back up the archive.

    humus archive backup /var/lib/humus/archive.sqlite /var/backups/humus/
    humus archive influx-setup influxdb://127.0.0.1:8086/humus
    humus archive migrate --store influxdb://127.0.0.1:8086/humus

`backup` copies a live SQLite archive (or ingest state file) with SQLite's
online backup API while ingest keeps writing; a plain `cp` of a WAL
database is not a backup. `influx-setup` prepares an InfluxDB 1.x over its
HTTP API: database, retention policy, a write-only user for ingest, a
read-only one for researchers, and checks that authentication is on
(docs/deploy.md). Both can run again at any time: the second run changes
nothing it need not.
"""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("archive", help="back up the SQLite archive; set up InfluxDB (users, retention)",
                       description="Archive administration (see docs/deploy.md).")
    asub = p.add_subparsers(dest="archive_command", metavar="ACTION")

    b = asub.add_parser("backup", help="copy a live SQLite archive consistently (online backup API)")
    b.add_argument("source", help="the SQLite file, or its store URL sqlite:PATH")
    b.add_argument("dest", help="backup file, or a directory to put it in (same name)")
    b.set_defaults(func=run_backup)

    s = asub.add_parser("influx-setup", help="create database, retention policy and users on InfluxDB 1.x")
    s.add_argument("url", help="influxdb://HOST:PORT/DATABASE (or influxdbs://, http://, https://)")
    s.add_argument("--retention", default="INF",
                   help="how long the database keeps data: INF (default: a carbon record is kept for good) or "
                        "e.g. 520w")
    s.add_argument("--shard-duration", default=None,
                   help="time range of one shard group (default 52w for INF, else InfluxDB's recommendation)")
    s.add_argument("--rp", default="humus", help="retention policy name, made the default (default humus)")
    s.add_argument("--config-dir", default="/etc/humus", help="where credential files go (default /etc/humus)")
    s.add_argument("--admin-user", default="humus-admin")
    s.add_argument("--ingest-user", default="humus-ingest", help="write-only user (default humus-ingest)")
    s.add_argument("--reader-user", default="humus-reader", help="read-only user (default humus-reader)")
    s.add_argument("--service-owner", default="humus",
                   help="system user that owns the ingest and reader credential files (default humus)")
    s.add_argument("--no-tls-verify", action="store_true", help="accept a self-signed certificate (tests only)")
    s.set_defaults(func=run_influx_setup)

    m = asub.add_parser("migrate", help="bring an archive to the current layout (InfluxDB point layout 2)")
    m.add_argument("--store", required=True, metavar="URL", help="store URL (docs/stores.md); on InfluxDB with "
                   "authentication, credentials that may read, write and drop measurements")
    m.add_argument("--keep-old", action="store_true", help="leave the layout-1 measurements in place")
    m.set_defaults(func=run_migrate)

    v = asub.add_parser("provenance", help="per gateway: batches stored, and those with a verified signature")
    v.add_argument("--state", required=True, metavar="FILE",
                   help="the ingest state file ([ingest] state_file; ARCHIVE.ingest.sqlite beside a SQLite archive)")
    v.add_argument("--format", choices=["table", "json"], default="table")
    v.set_defaults(func=run_provenance)
    p.set_defaults(func=lambda args: _usage(p))


def _usage(p: argparse.ArgumentParser) -> int:
    p.print_help()
    return 2


def run_backup(args: argparse.Namespace) -> int:
    from humus.cli import CommandError
    from observatory.archive_backup import BackupError, backup_sqlite

    source = args.source
    if source.startswith("sqlite:"):
        source = source[len("sqlite:"):]
        source = source[2:] if source.startswith("//") else source
    try:
        r = backup_sqlite(source, args.dest)
    except BackupError as e:
        raise CommandError(str(e)) from None
    print(f"backed up {r.source} to {r.dest}: {r.bytes / 1e6:.1f} MB in {r.seconds:.1f} s")
    return 0


def run_provenance(args: argparse.Namespace) -> int:
    """Which batches of each gateway are in the archive, and which of them carried a verified Ed25519
    signature (docs/wire.md, Signed batches): what an auditor asks before trusting a series."""
    import json
    from pathlib import Path

    from humus.cli import CommandError
    from observatory.deadletter import BatchLedger
    from observatory.store import StoreError

    if not Path(args.state).is_file():
        raise CommandError(f"--state {args.state}: no such file (expected the ingest state file)", 2)
    try:
        ledger = BatchLedger(args.state)
    except StoreError as e:
        raise CommandError(f"--state {args.state}: {e}", 2) from None
    try:
        rows = []
        for site, gw in ledger.gateways():
            stored, verified = ledger.ranges(site, gw), ledger.verified_ranges(site, gw)
            n_stored = sum(b - a + 1 for a, b in stored)
            n_verified = sum(b - a + 1 for a, b in verified)
            rows.append({"site": site, "gateway": gw, "batches": n_stored, "verified": n_verified,
                         "stored_seqs": stored, "verified_seqs": verified})
    finally:
        ledger.close()
    if args.format == "json":
        print(json.dumps(rows))
        return 0
    print(f"{'site/gateway':<40} {'batches':>9} {'verified':>9}  unverified seqs")
    for r in rows:
        unverified = _minus(r["stored_seqs"], r["verified_seqs"])
        text = ", ".join(f"{a}-{b}" if a != b else f"{a}" for a, b in unverified[:6]) or "-"
        print(f"{r['site'] + '/' + r['gateway']:<40} {r['batches']:>9} {r['verified']:>9}  "
              f"{text}{' ...' if len(unverified) > 6 else ''}")
    return 0


def _minus(ranges: list, minus: list) -> list:
    """Closed ranges of `ranges` not covered by `minus` (both sorted, disjoint)."""
    out = []
    for a, b in ranges:
        for c, d in minus:
            if d < a or c > b:
                continue
            if c > a:
                out.append((a, c - 1))
            a = max(a, d + 1)
        if a <= b:
            out.append((a, b))
    return out


def run_migrate(args: argparse.Namespace) -> int:
    from humus.cli import CommandError
    from observatory.archive_migrate import migrate
    from observatory.store import StoreError

    try:
        report = migrate(args.store, keep_old=args.keep_old, progress=lambda line: print(line, flush=True))
    except StoreError as e:
        raise CommandError(f"{e}; check --store {args.store.split('?', 1)[0]}") from None
    for line in report.lines():
        print(line)
    return 0


def _default_shard(retention: str) -> str:
    """InfluxDB 1.x docs, "Shard group duration recommendations" (schema and data layout)."""
    from observatory.influx_setup import _hours

    hours = _hours(retention)
    if hours == 0:
        return "52w"
    if hours <= 24:
        return "6h"
    if hours <= 7 * 24:
        return "1d"
    if hours <= 90 * 24:
        return "7d"
    return "30d"


def run_influx_setup(args: argparse.Namespace) -> int:
    from pathlib import Path
    from urllib.parse import urlsplit

    from humus.cli import CommandError
    from observatory.influx_setup import Account, InfluxSetup, SetupError

    parts = urlsplit(args.url)
    scheme = {"influxdb": "http", "http": "http", "influxdbs": "https", "https": "https"}.get(parts.scheme.lower())
    database = parts.path.strip("/")
    if not scheme or not parts.hostname or not database or "/" in database:
        raise CommandError(f"URL {args.url!r}: expected influxdb://HOST:PORT/DATABASE (InfluxDB 1.x)", 2)
    if parts.username or parts.password:
        raise CommandError(f"URL {args.url!r} carries credentials; the admin's go in "
                           f"{args.config_dir}/influx-admin.toml, never on the command line", 2)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    conf = Path(args.config_dir)
    try:
        shard = args.shard_duration or _default_shard(args.retention)
        setup = InfluxSetup(
            base_url=f"{scheme}://{host}:{parts.port or 8086}", database=database,
            admin=Account(args.admin_user, conf / "influx-admin.toml"),
            writer=Account(args.ingest_user, conf / "influx-ingest.toml", args.service_owner),
            reader=Account(args.reader_user, conf / "influx-reader.toml", args.service_owner),
            rp=args.rp, duration=args.retention, shard_duration=shard, verify_tls=not args.no_tls_verify)
        actions = setup.run()
    except SetupError as e:
        raise CommandError(str(e)) from None
    for line in actions:
        print(line)
    if not actions:
        print(f"{setup.base_url}/{database}: already set up, nothing changed")
    print(f"authentication is on; ingest store URL: {parts.scheme}://{parts.netloc}/{database}"
          f"?rp={args.rp}&credentials={conf / 'influx-ingest.toml'}")
    return 0
