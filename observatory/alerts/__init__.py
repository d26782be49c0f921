"""Alerts on sensor and gateway faults (docs/alerts.md).

- `rules`: pure functions of a `buffers.Snapshot`, the same live and in replay;
- `lifecycle`: pending -> firing -> resolved, as Prometheus defines it;
- `engine`: buffers -> snapshot -> rules -> life cycle, one evaluation;
- `state`: the ``alert_*`` SQLite tables (state, history, silences, gateway history);
- `notify`: Alertmanager, or the built-in notifier and its channels;
- `service`: the `humus alerts` daemon; `replay`: `humus alerts replay`;
- `config`: the ``[alerts]`` table of observatory.toml.
"""
