"""`humus gateway`: broker users, ACL and certificates for gateways and services (on the broker host).

    humus gateway init --host broker.example.org          # CA, server certificate, empty users (once)
    humus gateway add farm-1 gw-1 [--cert]                # a gateway: password, ACL, [mqtt] block to copy
    humus gateway service ingest ingest-1                 # a central service's user (ingest, alerts)
    humus gateway list
    humus gateway remove farm-1/gw-1

The files are Mosquitto's own (deploy/mosquitto/humus.conf names them), under
--broker-dir (default /etc/mosquitto/humus). Passwords are generated here and
written only to files of mode 0600/0640, never printed or passed as arguments.
After a change: `systemctl reload mosquitto` (re-reads users and ACL).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import tomllib
from pathlib import Path
from typing import Iterator

BROKER_DIR = "/etc/mosquitto/humus"
SETTINGS = "humus-broker.toml"
RELOAD = "reload the broker to apply it: systemctl reload mosquitto"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gateway", help="broker users, ACL and certificates for gateways and services",
                       description="Manage who may publish and read what on the Mosquitto broker "
                                   "(see docs/deploy.md). Run on the broker host.")
    p.add_argument("--broker-dir", default=BROKER_DIR,
                   help=f"where the CA, certificates, password and ACL files live (default {BROKER_DIR})")
    p.add_argument("--group", default="mosquitto",
                   help="group that may read the broker's files (default mosquitto)")
    gsub = p.add_subparsers(dest="gateway_command", metavar="ACTION")

    i = gsub.add_parser("init", help="create the local CA, the server certificate and empty user files (once)")
    i.add_argument("--host", action="append", required=True, metavar="NAME",
                   help="a name or IP address gateways connect to (repeatable; the first goes in [mqtt] host)")
    i.add_argument("--port", type=int, default=8883, help="TLS listener (default 8883)")
    i.add_argument("--cert-port", type=int, default=8884,
                   help="TLS listener that requires a client certificate (default 8884)")
    i.add_argument("--local-port", type=int, default=1883, help="loopback listener for local services (default 1883)")
    i.set_defaults(func=run_init)

    a = gsub.add_parser("add", help="register a gateway and write its [mqtt] block and credentials")
    a.add_argument("site", help="site id, [a-z0-9-]{1,64}")
    a.add_argument("gateway", help="gateway id, [a-z0-9-]{1,64}")
    a.add_argument("--cert", action="store_true",
                   help="also issue a client certificate; the gateway then uses the listener that requires one")
    a.add_argument("--out", metavar="DIR", help="where to write the gateway's files (default ./SITE.GATEWAY)")
    a.add_argument("--rotate", action="store_true", help="replace the credentials of a gateway that exists")
    a.add_argument("--config-dir", default="/etc/humus", help="where the files will be on the gateway")
    a.add_argument("--no-sign", action="store_true",
                   help="no Ed25519 signing key (default: make one; ingest then accepts only signed batches "
                        "from this gateway, docs/wire.md 'Signed batches')")
    a.add_argument("--registry", metavar="FILE",
                   help=f"the ingest side's gateway registry to update ([ingest] registry_file; default {REGISTRY}, "
                        "or gateways.toml in --broker-dir when that is not the default)")
    a.set_defaults(func=run_add)

    s = gsub.add_parser("service", help="register a central service (an ingest worker or the alerts service)")
    s.add_argument("role", choices=["ingest", "alerts"])
    s.add_argument("name", help="the service's user and MQTT client id, e.g. ingest-1")
    s.add_argument("--out", metavar="DIR", default="/etc/humus",
                   help="where to write NAME.mqtt.toml and NAME.mqtt.password (default /etc/humus)")
    s.add_argument("--owner-group", default="humus", help="group of the written files (default humus)")
    s.add_argument("--remote", action="store_true",
                   help="the service runs on another host: connect over TLS instead of the loopback listener")
    s.add_argument("--rotate", action="store_true", help="replace the credentials of a service that exists")
    s.set_defaults(func=run_service)

    ls = gsub.add_parser("list", help="list users and their topics")
    ls.set_defaults(func=run_list)

    r = gsub.add_parser("remove", help="remove a gateway (SITE/GATEWAY) or a service (NAME)")
    r.add_argument("who")
    r.add_argument("--registry", metavar="FILE", help="the ingest side's gateway registry to update (as for add)")
    r.set_defaults(func=run_remove)
    p.set_defaults(func=lambda args: _usage(p))


REGISTRY = "/etc/humus/gateways.toml"


def _registry(args: argparse.Namespace) -> Path:
    if args.registry:
        return Path(args.registry)
    return Path(REGISTRY) if args.broker_dir == BROKER_DIR else Path(args.broker_dir) / "gateways.toml"


def _update_registry(path: Path, gateway: tuple[str, str], public_key: str | None) -> None:
    """Set (or, with None, remove) a gateway in the registry ingest reads ([ingest] registry_file).

    Public keys only: the file is 0644. Ingest re-reads it within seconds, no restart needed.
    """
    from humus.cli import CommandError
    from humus.private_files import write_private
    from humus.signing import load_registry, registry_line

    try:
        entries = load_registry(path) if path.exists() else {}
    except ValueError as e:
        raise CommandError(f"{e}; fix or move the file, then run this again") from None
    if public_key is None:
        entries.pop(gateway, None)
    else:
        entries[gateway] = public_key
    text = "# Gateways ingest accepts, with their Ed25519 public keys (\"\" = does not sign).\n" \
           "# Kept by 'humus gateway add/remove'; read by ingest ([ingest] registry_file).\n"
    text += "".join(registry_line(s, g, k) for (s, g), k in sorted(entries.items()))
    write_private(path, text, 0o644)


def _usage(p: argparse.ArgumentParser) -> int:
    p.print_help()
    return 2


def _file_errors(func):
    """A file we may not read or write is one line naming it, not a traceback."""
    import functools

    @functools.wraps(func)
    def wrapper(args: argparse.Namespace) -> int:
        from humus.cli import CommandError

        try:
            return func(args)
        except OSError as e:
            raise CommandError(f"{e.filename or args.broker_dir}: {e.strerror}; the broker's files are root's: "
                               "run with sudo, or give --broker-dir/--out a directory you may write") from None

    return wrapper


def _paths(args: argparse.Namespace) -> dict[str, Path]:
    d = Path(args.broker_dir)
    return {name: d / name for name in ("ca.crt", "ca.key", "server.crt", "server.key", "passwd", "acl", SETTINGS)}


@contextlib.contextmanager
def _locked(args: argparse.Namespace) -> Iterator[None]:
    """One `humus gateway` at a time may change the files (two adds at once would lose one)."""
    from humus.cli import CommandError

    d = Path(args.broker_dir)
    if not d.is_dir():
        raise CommandError(f"broker directory {d} does not exist; run 'humus gateway init --host NAME' first")
    with open(d / ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _settings(args: argparse.Namespace) -> dict:
    from humus.cli import CommandError

    path = _paths(args)[SETTINGS]
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise CommandError(f"{path} is missing; run 'humus gateway init --host NAME' first") from None
    except tomllib.TOMLDecodeError as e:
        raise CommandError(f"{path}: not TOML ({e}); expected the file 'humus gateway init' writes") from None


def _load_ca(paths: dict[str, Path]):
    from humus.cli import CommandError
    from humus.pki import Issued

    try:
        return Issued(paths["ca.key"].read_bytes(), paths["ca.crt"].read_bytes())
    except FileNotFoundError as e:
        raise CommandError(f"{e.filename} is missing; run 'humus gateway init --host NAME' first") from None


def _users(paths: dict[str, Path]):
    from humus.broker_users import BrokerUsers
    from humus.cli import CommandError

    try:
        return BrokerUsers.load(paths["passwd"], paths["acl"])
    except ValueError as e:
        raise CommandError(f"{e}; fix or remove the line") from None


@_file_errors
def run_init(args: argparse.Namespace) -> int:
    from humus.pki import issue, make_ca
    from humus.private_files import write_private

    paths = _paths(args)
    d = Path(args.broker_dir)
    d.mkdir(parents=True, exist_ok=True)
    d.chmod(0o750)
    done = []
    with _locked(args):
        if not paths["ca.key"].exists():
            ca = make_ca()
            write_private(paths["ca.key"], ca.key_pem, 0o600)      # root only: it signs client certificates
            write_private(paths["ca.crt"], ca.cert_pem, 0o644)
            done.append(f"created the CA {paths['ca.crt']}")
        if not paths["server.key"].exists():
            server = issue(_load_ca(paths), args.host[0], server_names=args.host)
            write_private(paths["server.key"], server.key_pem, 0o640, args.group)
            write_private(paths["server.crt"], server.cert_pem, 0o644)
            done.append(f"issued the server certificate {paths['server.crt']} for {', '.join(args.host)}")
        missing = [paths[name] for name in ("passwd", "acl") if not paths[name].exists()]
        if missing:
            _users(paths).save(args.group)       # keeps what exists, creates what is missing
            done += [f"created {p}" for p in missing]
        else:
            users = _users(paths)
            if paths["acl"].read_text() != users.acl_text():   # an upgrade: the same users, this version's topics
                users.save(args.group)
                done.append(f"rewrote {paths['acl']} with this version's topics for the same users "
                            "(systemctl reload mosquitto)")
        settings = (f'# written by humus gateway init\nhost = "{args.host[0]}"\nport = {args.port}\n'
                    f'cert_port = {args.cert_port}\nlocal_port = {args.local_port}\n')
        if not paths[SETTINGS].exists() or paths[SETTINGS].read_text() != settings:
            write_private(paths[SETTINGS], settings, 0o644)
            done.append(f"wrote {paths[SETTINGS]}")
    for line in done:
        print(line)
    print("broker files ready" if done else f"{d}: already set up, nothing changed")
    return 0


def _mqtt_block(host: str, port: int, user: str, password_file: str, *, tls: bool, ca_file: str = "",
                cert_file: str = "", key_file: str = "") -> str:
    lines = ["[mqtt]", f'host = "{host}"', f"port = {port}", 'protocol = "5"', f'client_id = "{user}"',
             f'username = "{user}"', f'password_file = "{password_file}"', f"tls = {'true' if tls else 'false'}"]
    if tls:
        lines.append(f'ca_file = "{ca_file}"')
    if cert_file:
        lines += [f'cert_file = "{cert_file}"', f'key_file = "{key_file}"']
    lines.append("session_expiry_s = 604800")
    return "\n".join(lines) + "\n"


@_file_errors
def run_add(args: argparse.Namespace) -> int:
    from humus.broker_users import Entry, Role, gateway_user, new_password
    from humus.cli import CommandError
    from humus.pki import issue
    from humus.private_files import write_private

    try:
        user = gateway_user(args.site, args.gateway)
    except ValueError as e:
        raise CommandError(str(e), 2) from None
    paths = _paths(args)
    out = Path(args.out or user)
    conf = Path(args.config_dir)
    with _locked(args):
        settings = _settings(args)
        users = _users(paths)
        if user in users.hashes and not args.rotate:
            raise CommandError(f"gateway {args.site}/{args.gateway} is already registered (user {user}); "
                               "add --rotate to issue new credentials")
        password = new_password()
        write_private(out / "mqtt.password", password + "\n", 0o600)
        write_private(out / "ca.crt", paths["ca.crt"].read_bytes(), 0o644)
        cert_args = {}
        if args.cert:
            leaf = issue(_load_ca(paths), user, client=True)
            write_private(out / "client.key", leaf.key_pem, 0o600)
            write_private(out / "client.crt", leaf.cert_pem, 0o644)
            cert_args = {"cert_file": str(conf / "client.crt"), "key_file": str(conf / "client.key")}
        block = _mqtt_block(settings["host"], settings["cert_port"] if args.cert else settings["port"], user,
                            str(conf / "mqtt.password"), tls=True, ca_file=str(conf / "ca.crt"), **cert_args)
        write_private(out / "mqtt.toml", f"# gateway {args.site}/{args.gateway}: the [mqtt] block of "
                                         f"{conf / 'gateway.toml'}\n" + block, 0o644)
        signing = ""
        public_key = ""
        if not args.no_sign:
            from humus.signing import new_key_pair

            pem, public_key = new_key_pair()
            write_private(out / "signing.key", pem, 0o600)
            signing = f'\n# in [gateway] of {conf / "gateway.toml"}:\nsigning_key = "{conf / "signing.key"}"\n'
        users.set(Entry(user, Role.GATEWAY, f"{args.site}/{args.gateway}"), password)
        users.save(args.group)
        _update_registry(_registry(args), (args.site, args.gateway), public_key)
    print(block + signing, end="")
    print(f"\n{'rotated' if args.rotate else 'registered'} gateway {args.site}/{args.gateway} (user {user}); "
          f"its files are in {out}/: copy them to the gateway's {conf}/ "
          f"(deploy/install-gateway.sh --bundle {out}) and delete them here; {RELOAD}")
    return 0


@_file_errors
def run_service(args: argparse.Namespace) -> int:
    from humus.broker_users import Entry, Role, check_service_name, new_password
    from humus.cli import CommandError
    from humus.private_files import write_private

    try:
        name = check_service_name(args.name)
    except ValueError as e:
        raise CommandError(str(e), 2) from None
    paths = _paths(args)
    out = Path(args.out)
    with _locked(args):
        settings = _settings(args)
        users = _users(paths)
        if name in users.hashes and not args.rotate:
            raise CommandError(f"service {name} is already registered; add --rotate to issue new credentials")
        password = new_password()
        password_file = out / f"{name}.mqtt.password"
        write_private(password_file, password + "\n", 0o640, args.owner_group)
        if args.remote:
            write_private(out / "ca.crt", paths["ca.crt"].read_bytes(), 0o644)
            block = _mqtt_block(settings["host"], settings["port"], name, str(password_file), tls=True,
                                ca_file=str(out / "ca.crt"))
        else:
            block = _mqtt_block("127.0.0.1", settings["local_port"], name, str(password_file), tls=False)
        if args.role == "ingest":
            block = f'[ingest]\nclient_id = "{name}"\n\n' + block
        write_private(out / f"{name}.mqtt.toml", f"# {args.role} service {name}\n" + block, 0o640, args.owner_group)
        users.set(Entry(name, Role(args.role), name), password)
        users.save(args.group)
    print(block, end="")
    print(f"\n{'rotated' if args.rotate else 'registered'} {args.role} service {name}; "
          f"written to {out / (name + '.mqtt.toml')} and {password_file}; {RELOAD}")
    return 0


@_file_errors
def run_list(args: argparse.Namespace) -> int:
    from humus.broker_users import acl_lines

    users = _users(_paths(args))
    for user, entry in users.entries.items():
        state = "" if user in users.hashes else "  (no password: cannot log in)"
        topics = ", ".join(line.split(" ", 1)[1] for line in acl_lines(entry.role, user))
        print(f"{entry.role.value:<8} {entry.subject:<40} user {user}{state}\n         {topics}")
    print(f"{len(users.entries)} user(s) in {Path(args.broker_dir) / 'acl'}")
    return 0


@_file_errors
def run_remove(args: argparse.Namespace) -> int:
    from humus.broker_users import gateway_user
    from humus.cli import CommandError

    who = args.who
    try:
        user = gateway_user(*who.split("/", 1)) if "/" in who else who
    except ValueError as e:
        raise CommandError(str(e), 2) from None
    paths = _paths(args)
    with _locked(args):
        users = _users(paths)
        if not users.remove(user):
            raise CommandError(f"{who}: no such gateway or service in {paths['acl']} (see 'humus gateway list')")
        users.save(args.group)
        if "/" in who and _registry(args).exists():
            _update_registry(_registry(args), tuple(who.split("/", 1)), None)
    print(f"removed {who} (user {user}); {RELOAD}")
    return 0
