"""The [alerts] table: parsed with its defaults, one-line errors, and beside [ingest] in one observatory.toml."""

from __future__ import annotations

from pathlib import Path

import pytest

from humus.cli import main
from humus.config import ConfigError, load_section, read_toml
from observatory.alerts.config import AlertsSettings, RulesSettings, load_alerts_config, load_rules_file
from observatory.config import load_observatory_config

REPO = Path(__file__).resolve().parents[3]


def write(tmp_path, text: str) -> Path:
    p = tmp_path / "observatory.toml"
    p.write_text(text)
    return p


def test_the_deploy_example_is_the_defaults():
    data = read_toml(REPO / "deploy" / "alerts.example.toml")
    a = load_section(AlertsSettings, data["alerts"], file="example", key="alerts")
    assert a == AlertsSettings(client_id="humus-alerts-1")


def test_ingest_and_alerts_share_one_file(tmp_path):
    p = write(tmp_path, f'[ingest]\nstore = "sqlite:{tmp_path}/a.sqlite"\n\n[alerts]\neval_interval_s = 30\n'
                        '[alerts.rules.no_data]\nintervals = 5\n')
    assert load_observatory_config(p).ingest.store.endswith("a.sqlite")
    cfg = load_alerts_config(p)
    assert cfg.store == f"sqlite:{tmp_path}/a.sqlite" and cfg.state_file == tmp_path / "a.sqlite"
    assert cfg.alerts.eval_interval_s == 30 and cfg.alerts.rules.no_data.intervals == 5
    assert main(["check-config", str(p)]) == 0


@pytest.mark.parametrize("text, key, expected", [
    ('[alerts.rules.no_data]\nintervalz = 3', "alerts.rules.no_data.intervalz", "unknown key"),
    ('[alerts.rules.qartod_flags]\nshare = 1.5', "alerts.rules.qartod_flags.share", "a share in (0, 1]"),
    ('[alerts.rules.out_of_range.quantities.vwc]\nfail_span = [0.0, 0.5]\nsuspect_span = [0.0, 0.6]',
     "alerts.rules.out_of_range.quantities.vwc.suspect_span", "within fail_span"),
    ('[alerts.notify]\nwebhook_urls = ["ftp://x"]', "alerts.notify.webhook_urls", "http(s)://"),
    ('[alerts]\nobs_subscription = "shared"\ngroup = "humus-ingest"', "alerts.group", "not the ingest group"),
    ('[alerts.notify]\ngroup_interval_s = 3600', "alerts.resolved_retention_s", "group_interval_s"),
])
def test_a_bad_value_is_one_line_naming_file_key_and_expectation(tmp_path, text, key, expected):
    p = write(tmp_path, f'[ingest]\nstore = "sqlite:{tmp_path}/a.sqlite"\n' + text)
    with pytest.raises(ConfigError) as e:
        load_alerts_config(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}: {key}: ") and expected in msg and "\n" not in msg


def test_an_influxdb_store_needs_a_state_file(tmp_path):
    p = write(tmp_path, '[alerts]\nstore = "influxdb://127.0.0.1:8086/humus"\n')
    with pytest.raises(ConfigError, match="alerts.state_file"):
        load_alerts_config(p)


def test_replay_rules_from_a_file_of_rules_tables(tmp_path):
    p = tmp_path / "rules.toml"
    p.write_text('[rules.no_data]\nintervals = 8\n[rules.flat_line]\nenabled = false\n')
    rules = load_rules_file(p)
    assert rules.no_data.intervals == 8 and not rules.flat_line.enabled
    assert rules.clock == RulesSettings().clock


def test_cli_lists_silences_and_alerts_of_the_builtin_notifier(tmp_path, capsys):
    p = write(tmp_path, f'[ingest]\nstore = "sqlite:{tmp_path}/a.sqlite"\n')
    assert main(["alerts", "list", "--config", str(p), "--firing"]) == 0
    assert "no firing alerts" in capsys.readouterr().err
    assert main(["alerts", "silence", "add", "--config", str(p), "--match", "probe=teros-a", "--for", "2h",
                 "--comment", "recalibrating"]) == 0
    sid = capsys.readouterr().out.split()[1].rstrip(":")
    assert main(["alerts", "silence", "list", "--config", str(p)]) == 0
    assert f"{sid}  probe=teros-a" in capsys.readouterr().out
    assert main(["alerts", "silence", "expire", "--config", str(p), sid]) == 0
    assert main(["alerts", "silence", "expire", "--config", str(p), sid]) == 1
    assert "no active silence" in capsys.readouterr().err
    assert main(["alerts", "silence", "add", "--config", str(p), "--match", "probe"]) == 2
    assert "expected LABEL=VALUE" in capsys.readouterr().err


def test_cli_replay_refuses_a_missing_archive_in_one_line(tmp_path, capsys):
    assert main(["alerts", "replay", "--store", f"sqlite:{tmp_path}/none.sqlite", "--since", "-1d",
                 "--until", "now"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("humus alerts: no archive at") and "\n" not in err
