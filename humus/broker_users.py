"""Mosquitto users and ACL for Humus: who may publish and read which topics.

The broker is the only thing that stops one gateway from writing as
another, so each client gets its own user and exactly the topics of its
role (docs/deploy.md):

- a gateway `<site>.<gateway>` publishes only under
  ``humus/v1/<site>/<gateway>/`` and reads only its receipts,
  ``humus/v1/<site>/<gateway>/receipt``;
- an ingest worker reads every gateway's obs, status and alerts, publishes
  receipts to any gateway, owns ``humus/v1/_observatory/<name>/``, tells
  the batches it stored on ``humus/v1/_ingest/<name>/ledger`` and reads
  the other ingest workers' (no other role may write there);
- an alerts service reads obs, status and alerts, publishes its
  notifications on a site's ``humus/v1/<site>/alerts`` (one level above the
  gateways' topics, so no gateway can), and owns its own
  ``humus/v1/_observatory/<name>/``.

Files are Mosquitto's own formats (mosquitto.conf(5): `password_file`,
`acl_file`), so the broker needs no plugin. Passwords are stored as
Mosquitto 2.0's ``$7$`` hashes: PBKDF2-HMAC-SHA512, 101 iterations, 12-byte
salt, ``$7$<iterations>$<base64 salt>$<base64 hash>`` (mosquitto_passwd's
default; `tests/deploy` checks a hash of ours against mosquitto_passwd's and
logs in with it).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from humus.private_files import write_private

ID_RE = re.compile(r"[a-z0-9-]{1,64}")
SERVICE_RE = re.compile(r"[a-z][a-z0-9-]{0,63}")
ITERATIONS = 101
SALT_BYTES = 12
TOPIC_ROOT = "humus/v1"


class Role(str, Enum):
    GATEWAY = "gateway"
    INGEST = "ingest"
    ALERTS = "alerts"


def hash_password(password: str, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    """A Mosquitto 2.0 ``$7$`` password-file hash of `password`."""
    salt = salt if salt is not None else os.urandom(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def check_password(password: str, entry: str) -> bool:
    """Whether `password` matches a ``$7$`` hash (what the broker will do)."""
    parts = entry.split("$")
    if len(parts) != 5 or parts[1] != "7":
        return False
    iterations, salt = int(parts[2]), base64.b64decode(parts[3])
    return hmac.compare_digest(hash_password(password, salt, iterations), entry)


def new_password() -> str:
    """32 random URL-safe characters (192 bits): never typed, so never short."""
    return secrets.token_urlsafe(24)


def gateway_user(site: str, gateway: str) -> str:
    """The broker user (and client id) of a gateway; '.' is not in the id alphabet, so it is unambiguous."""
    for what, value in (("site", site), ("gateway", gateway)):
        if not ID_RE.fullmatch(value):
            raise ValueError(f"{what} id {value!r}: expected 1 to 64 of a-z, 0-9 and '-'")
    return f"{site}.{gateway}"


def check_service_name(name: str) -> str:
    if not SERVICE_RE.fullmatch(name):
        raise ValueError(f"service name {name!r}: expected a letter then up to 63 of a-z, 0-9 and '-' "
                         "(it is the client id, e.g. ingest-1)")
    return name


def acl_lines(role: Role, user: str) -> list[str]:
    """The ACL topic lines of one user (MQTT wildcards as in mosquitto.conf(5) `acl_file`)."""
    if role is Role.GATEWAY:
        site, gateway = user.split(".", 1)
        own = f"{TOPIC_ROOT}/{site}/{gateway}"
        return [f"topic write {own}/#", f"topic read {own}/receipt"]
    reads = [f"topic read {TOPIC_ROOT}/+/+/{kind}" for kind in ("obs", "status", "alerts")]
    own = [f"topic readwrite {TOPIC_ROOT}/_observatory/{user}/#"]
    if role is Role.INGEST:
        # The group's stored seqs (observatory.ledgershare): each ingest user tells under its own name only.
        ledger = [f"topic write {TOPIC_ROOT}/_ingest/{user}/ledger", f"topic read {TOPIC_ROOT}/_ingest/+/ledger"]
        return reads + [f"topic write {TOPIC_ROOT}/+/+/receipt"] + own + ledger
    return reads + [f"topic write {TOPIC_ROOT}/+/alerts"] + own


@dataclass
class Entry:
    user: str
    role: Role
    subject: str          # "site/gateway" or the service name

    def acl_block(self) -> str:
        return "\n".join([f"# humus: {self.role.value} {self.subject}", f"user {self.user}",
                          *acl_lines(self.role, self.user)]) + "\n"


ACL_HEADER = """\
# Humus broker ACL, written by `humus gateway`: change it with that command.
# No topic line comes before the first `user` line, so a client without a
# user (refused anyway: allow_anonymous false) could read or write nothing.
"""


@dataclass
class BrokerUsers:
    """The password and ACL files of one broker, read, changed and written together."""

    passwd: Path
    acl: Path
    hashes: dict[str, str] = field(default_factory=dict)
    entries: dict[str, Entry] = field(default_factory=dict)

    @classmethod
    def load(cls, passwd: Path, acl: Path) -> "BrokerUsers":
        users = cls(passwd, acl)
        if passwd.exists():
            for n, line in enumerate(passwd.read_text().splitlines(), 1):
                if line.strip() and not line.startswith("#"):
                    user, sep, h = line.partition(":")
                    if not sep:
                        raise ValueError(f"{passwd}:{n}: expected USER:HASH")
                    users.hashes[user] = h
        if acl.exists():
            pending: tuple[Role, str] | None = None
            for line in acl.read_text().splitlines():
                if line.startswith("# humus: "):
                    role, _, subject = line[len("# humus: "):].partition(" ")
                    pending = (Role(role), subject)
                elif line.startswith("user ") and pending:
                    user = line[5:].strip()
                    users.entries[user] = Entry(user, *pending)
                    pending = None
        return users

    def set(self, entry: Entry, password: str) -> None:
        self.entries[entry.user] = entry
        self.hashes[entry.user] = hash_password(password)

    def remove(self, user: str) -> bool:
        found = user in self.entries or user in self.hashes
        self.entries.pop(user, None)
        self.hashes.pop(user, None)
        return found

    def acl_text(self) -> str:
        return ACL_HEADER + "".join("\n" + e.acl_block() for e in self.entries.values())

    def passwd_text(self) -> str:
        return "".join(f"{u}:{h}\n" for u, h in self.hashes.items())

    def save(self, group: str | None = "mosquitto") -> None:
        # Readable by the broker's group only: the hashes are slow to crack, not impossible.
        write_private(self.passwd, self.passwd_text(), 0o640, group)
        write_private(self.acl, self.acl_text(), 0o640, group)
