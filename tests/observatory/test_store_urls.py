"""Store URLs: what each scheme opens, and one clear refusal for each mistake."""

from __future__ import annotations

import pytest

from observatory.store import StoreError
from observatory.stores import influx_target, open_store
from observatory.stores.sqlite import SqliteStore


@pytest.fixture(autouse=True)
def no_credentials_in_environment(monkeypatch):
    for name in ("TOKEN", "USER", "PASSWORD", "CREDENTIALS", "ORG"):
        monkeypatch.delenv(f"HUMUS_INFLUX_{name}", raising=False)


def test_sqlite_urls_open_the_archive_relative_or_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert isinstance(open_store("sqlite:rel.sqlite"), SqliteStore) and (tmp_path / "rel.sqlite").exists()
    assert isinstance(open_store(f"sqlite://{tmp_path}/abs.sqlite"), SqliteStore) and (tmp_path / "abs.sqlite").exists()


@pytest.mark.parametrize("url, api, base, db", [
    ("influxdb://db.example:8087/humus", 1, "http://db.example:8087", "humus"),
    ("influxdb://db.example/humus?rp=forever", 1, "http://db.example:8086", "humus"),
    ("influxdbs://db.example/humus", 1, "https://db.example:8086", "humus"),
    ("http://127.0.0.1:9999/x", 1, "http://127.0.0.1:9999", "x"),
    ("influxdb2://db.example:8086/bucket?org=lab", 2, "http://db.example:8086", "bucket"),
    ("influxdb2s://db.example:443/bucket?org=lab", 2, "https://db.example:443", "bucket"),
])
def test_influx_urls_name_server_database_and_api(url, api, base, db):
    t = influx_target(url)
    assert (t.api, t.base_url, t.database) == (api, base, db)


def test_credentials_come_from_the_environment_or_a_file(tmp_path, monkeypatch):
    creds = tmp_path / "influx.toml"
    creds.write_text('user = "ingest"\npassword = "s3cret"\n')
    creds.chmod(0o600)
    t = influx_target(f"influxdb://h/db?credentials={creds}")
    assert (t.user, t.password, t.token) == ("ingest", "s3cret", None)
    monkeypatch.setenv("HUMUS_INFLUX_TOKEN", "tok")
    monkeypatch.setenv("HUMUS_INFLUX_ORG", "lab")
    t = influx_target("influxdb2://h/bucket")
    assert (t.token, t.org) == ("tok", "lab")


@pytest.mark.parametrize("url, message", [
    ("nowhere", "no scheme"),
    ("postgres://h/db", "scheme 'postgres' is unknown"),
    ("sqlite:", "names no file"),
    ("influxdb://user:pw@h/db", "never in the URL"),
    ("influxdb://h:99999/db", "bad port"),
    ("influxdb://h/", "names no database"),
    ("influxdb2://h/bucket", "needs ?org=ORG"),
    ("influxdb://h/db?colour=red", "parameter 'colour' is unknown"),
    ("influxdb://h/db?credentials=/no/such/file", "cannot read it"),
])
def test_a_bad_store_url_gets_one_clear_message(url, message):
    with pytest.raises(StoreError, match=message.replace("?", r"\?")):
        open_store(url)
