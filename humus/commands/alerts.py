"""`humus alerts`: the alerts service, its alerts and silences, and replays over the archive.

    humus alerts --config observatory.toml                  run the service (docs/alerts.md)
    humus alerts list --config observatory.toml [--firing]  alerts now (or --history)
    humus alerts silence add|list|expire --config ...       silences (Alertmanager's when one is configured)
    humus alerts replay --store URL --since T --until T [--rules FILE]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)$")
_UNIT_S = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}
# Let "--since -1h" through, as `humus query` does: argparse takes an argument starting with "-"
# for an option unless it looks like a negative number to this matcher.
_RELATIVE_TIME = re.compile(r"^-\d+(\.\d+)?(s|m|min|h|d|w)?$")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "alerts", help="alert on sensor and gateway faults; list, silence, replay alerts",
        description="Without an action: run the alerts service (subscribes to the gateways' observations, "
                    "status and alerts topics, evaluates the rules in [alerts.rules], notifies through "
                    "Alertmanager or the built-in notifier). Stops cleanly on SIGTERM/SIGINT. See docs/alerts.md.")
    p.add_argument("--config", metavar="FILE", help="observatory TOML file with an [alerts] table")
    p.set_defaults(func=run_service)
    acts = p.add_subparsers(dest="alerts_action", metavar="ACTION")

    ls = acts.add_parser("list", help="alerts pending, firing and recently resolved (or the history)")
    _config(ls)
    ls.add_argument("--firing", action="store_true", help="only firing alerts")
    ls.add_argument("--history", action="store_true", help="firing/resolved transitions instead of current alerts")
    ls.add_argument("--since", default="-7d", metavar="T", help="history from (default -7d; docs/query.md times)")
    ls.add_argument("--format", choices=["table", "json"], default="table")
    ls._negative_number_matcher = _RELATIVE_TIME
    ls.set_defaults(func=run_list)

    si = acts.add_parser("silence", help="silence alerts matching labels for a while")
    si_acts = si.add_subparsers(dest="silence_action", metavar="ACTION", required=True)
    add = si_acts.add_parser("add", help="add a silence")
    _config(add)
    add.add_argument("--match", action="append", required=True, metavar="LABEL=VALUE",
                     help="a label the alerts must have (repeat: all must match), e.g. probe=teros-a, rule=no_data")
    add.add_argument("--for", dest="duration", metavar="DURATION", help="how long, e.g. 2h, 30m, 3d (default 2h)")
    add.add_argument("--until", metavar="T", help="until this time instead (docs/query.md times)")
    add.add_argument("--comment", default="", help="why (shown in list)")
    add.add_argument("--by", default="", help="who (default: the user name)")
    add._negative_number_matcher = _RELATIVE_TIME
    add.set_defaults(func=run_silence_add)
    sl = si_acts.add_parser("list", help="silences not yet expired")
    _config(sl)
    sl.set_defaults(func=run_silence_list)
    ex = si_acts.add_parser("expire", help="end a silence now")
    _config(ex)
    ex.add_argument("id", help="the silence id (from silence list)")
    ex.set_defaults(func=run_silence_expire)

    rp = acts.add_parser("replay", help="evaluate the rules over archived data and print the alert timeline",
                         description="Evaluate the rules over archived data, as vmalert's replay does, and print "
                                     "the alert timeline (rule, subject, start, end) without notifying anyone.")
    rp.add_argument("--store", required=True, metavar="URL", help="the archive (docs/stores.md)")
    rp.add_argument("--since", required=True, metavar="T", help="first evaluation (docs/query.md times)")
    rp.add_argument("--until", required=True, metavar="T", help="last evaluation")
    rp.add_argument("--rules", metavar="FILE", help="rules to try: a TOML file of [rules.<rule>] tables, or an "
                                                    "observatory.toml (default: --config's, else the defaults)")
    _config(rp, required=False)
    rp.add_argument("--step", metavar="DURATION", help="evaluation step (default: [alerts] eval_interval_s, "
                                                       "else 60s); the live service's for the same timeline")
    rp.add_argument("--state", metavar="FILE", help="gateway status history to replay (default: the alert "
                                                    "tables of a sqlite: archive, if any)")
    rp.add_argument("--format", choices=["table", "json"], default="table")
    rp._negative_number_matcher = _RELATIVE_TIME
    rp.set_defaults(func=run_replay)


def _config(p: argparse.ArgumentParser, required: bool = True) -> None:
    # SUPPRESS: `humus alerts --config F list` and `humus alerts list --config F` both work.
    p.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, required=False,
                   help="observatory TOML file with an [alerts] table" + ("" if required else " (optional)"))


def _need_config(args: argparse.Namespace):
    from humus.cli import CommandError
    from observatory.alerts.config import load_alerts_config

    if not getattr(args, "config", None):
        raise CommandError("--config FILE is required (the observatory.toml with an [alerts] table)", 2)
    return load_alerts_config(args.config)


def parse_duration(text: str) -> float:
    from humus.cli import CommandError

    m = _DURATION.match(text.strip().lower())
    if not m:
        raise CommandError(f"duration {text!r}: expected a number and a unit, e.g. 90s, 30m, 2h, 3d", 2)
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def _time(text: str) -> int:
    from humus.cli import CommandError
    from observatory.query import TimeError, parse_time

    try:
        return parse_time(text)
    except TimeError as e:
        raise CommandError(str(e), 2) from None


def _state(cfg):
    from humus.cli import CommandError
    from observatory.alerts.state import AlertStore
    from observatory.store import StoreError

    try:
        return AlertStore(cfg.state_file)
    except StoreError as e:
        raise CommandError(f"{e}; check [alerts] state_file (or store) in {cfg.file}") from None


def run_service(args: argparse.Namespace) -> int:
    import os

    from humus.cli import CommandError
    from observatory.alerts.service import run_daemon
    from observatory.store import StoreError

    cfg = _need_config(args)
    os.umask(os.umask(0o027) | 0o027)
    try:
        return run_daemon(cfg)
    except StoreError as e:
        raise CommandError(f"{e}; check [alerts] store and state_file in {args.config}") from None


def run_list(args: argparse.Namespace) -> int:
    from observatory.alerts.lifecycle import AlertState
    from observatory.alerts.rules import fmt_time, subject_text

    cfg = _need_config(args)
    with _state(cfg) as st:
        if args.history:
            rows = st.history(since_ns=_time(args.since))
            if args.format == "json":
                json.dump([{"time": fmt_time(r.time_ns), "state": r.state, "rule": r.rule, "labels": r.labels,
                            "severity": r.severity, "summary": r.summary} for r in rows], sys.stdout, indent=1)
                print()
                return 0
            for r in rows:
                print(f"{fmt_time(r.time_ns)}  {r.state:<8} {r.rule:<22} {subject_text(r.labels)}  {r.summary}")
            if not rows:
                print(f"humus alerts: no alert history since {args.since}", file=sys.stderr)
            return 0
        alerts = [a for a in st.load() if not args.firing or a.state is AlertState.FIRING]
    alerts.sort(key=lambda a: (a.state is not AlertState.FIRING, a.active_at_ns))
    if args.format == "json":
        json.dump([{"state": a.state.value, "rule": a.rule, "labels": a.all_labels(),
                    "active_since": fmt_time(a.active_at_ns), "firing_since": fmt_time(a.fired_at_ns)
                    if a.fired_at_ns else None, "resolved_at": fmt_time(a.resolved_at_ns) if a.resolved_at_ns else None,
                    "value": a.value, "summary": a.summary, "check": a.check} for a in alerts], sys.stdout, indent=1)
        print()
        return 0
    for a in alerts:
        since = a.fired_at_ns if a.state is AlertState.FIRING else a.resolved_at_ns or a.active_at_ns
        print(f"{a.state.value:<8} {a.severity:<8} {a.rule:<22} {a.subject}  since {fmt_time(since)}  {a.summary}")
    if not alerts:
        print("humus alerts: no " + ("firing " if args.firing else "") + "alerts", file=sys.stderr)
    return 0


def _matchers(specs: list[str]) -> dict[str, str]:
    from humus.cli import CommandError

    out = {}
    for s in specs:
        k, sep, v = s.partition("=")
        if not sep or not re.fullmatch(r"[a-z_][a-z0-9_]*", k.strip()) or not v.strip():
            raise CommandError(f"--match {s!r}: expected LABEL=VALUE, e.g. probe=teros-a or rule=no_data", 2)
        out[k.strip()] = v.strip()
    return out


def _am(cfg):
    if not cfg.alerts.alertmanager.url:
        return None
    from observatory.alerts.notify.alertmanager import AlertmanagerApi
    return AlertmanagerApi(cfg.alerts.alertmanager)


def run_silence_add(args: argparse.Namespace) -> int:
    import getpass

    from humus.cli import CommandError
    from observatory.alerts.notify.alertmanager import AlertmanagerError
    from observatory.alerts.rules import fmt_time

    cfg = _need_config(args)
    matchers = _matchers(args.match)
    now = time.time_ns()
    if args.until and args.duration:
        raise CommandError("give --for or --until, not both", 2)
    ends = _time(args.until) if args.until else now + int(parse_duration(args.duration or "2h") * 1e9)
    if ends <= now:
        raise CommandError("the silence would end in the past", 2)
    by = args.by or getpass.getuser()
    am = _am(cfg)
    if am is not None:
        try:
            sid = am.add_silence(matchers, now, ends, by, args.comment)
        except AlertmanagerError as e:
            raise CommandError(f"{e}; check [alerts.alertmanager] url in {cfg.file}") from None
    else:
        with _state(cfg) as st:
            sid = st.add_silence(matchers, now, ends, by, args.comment, now).id
    print(f"silence {sid}: {', '.join(f'{k}={v}' for k, v in matchers.items())} until {fmt_time(ends)}")
    return 0


def run_silence_list(args: argparse.Namespace) -> int:
    from humus.cli import CommandError
    from observatory.alerts.notify.alertmanager import AlertmanagerError
    from observatory.alerts.rules import fmt_time

    cfg = _need_config(args)
    am = _am(cfg)
    if am is not None:
        try:
            for s in am.silences():
                if s.get("status", {}).get("state") == "expired":
                    continue
                m = ", ".join(f"{x['name']}={x['value']}" for x in s.get("matchers", []))
                print(f"{s['id']}  {m}  until {s['endsAt']}  by {s.get('createdBy', '')}: {s.get('comment', '')}")
        except AlertmanagerError as e:
            raise CommandError(f"{e}; check [alerts.alertmanager] url in {cfg.file}") from None
        return 0
    with _state(cfg) as st:
        silences = st.silences(time.time_ns())
    for s in silences:
        m = ", ".join(f"{k}={v}" for k, v in s.matchers)
        print(f"{s.id}  {m}  from {fmt_time(s.starts_ns)} until {fmt_time(s.ends_ns)}  by {s.created_by}: {s.comment}")
    if not silences:
        print("humus alerts: no active silences", file=sys.stderr)
    return 0


def run_silence_expire(args: argparse.Namespace) -> int:
    from humus.cli import CommandError
    from observatory.alerts.notify.alertmanager import AlertmanagerError

    cfg = _need_config(args)
    am = _am(cfg)
    if am is not None:
        try:
            am.expire_silence(args.id)
        except AlertmanagerError as e:
            raise CommandError(str(e)) from None
    else:
        with _state(cfg) as st:
            if not st.expire_silence(args.id, time.time_ns()):
                raise CommandError(f"no active silence {args.id!r} (see 'humus alerts silence list')")
    print(f"silence {args.id} expired")
    return 0


def run_replay(args: argparse.Namespace) -> int:
    from humus.cli import CommandError
    from observatory.alerts.config import RulesSettings, load_alerts_config, load_rules_file
    from observatory.alerts.replay import default_state, format_timeline, replay
    from observatory.alerts.rules import fmt_time
    from observatory.store import StoreError
    from observatory.stores import open_store

    cfg = load_alerts_config(args.config) if getattr(args, "config", None) else None
    rules = load_rules_file(args.rules) if args.rules else cfg.alerts.rules if cfg else RulesSettings()
    step = parse_duration(args.step) if args.step else cfg.alerts.eval_interval_s if cfg else 60.0
    since, until = _time(args.since), _time(args.until)
    if until < since:
        raise CommandError(f"--until {args.until} is before --since {args.since}", 2)
    from observatory.alerts.engine import align

    first = align(since, step)
    first += int(step * 1e9) if first < since else 0
    steps = max(0, (until - first) // int(step * 1e9) + 1)
    if steps > 2_000_000:
        raise CommandError(f"{steps} evaluations at a {step:g} s step: give a larger --step", 2)
    state = args.state or default_state(args.store)
    try:
        store = open_store(args.store, create=False)
    except StoreError as e:
        raise CommandError(str(e), 2) from None
    print(f"humus alerts replay: {steps} evaluations every {step:g} s from {fmt_time(since)} to {fmt_time(until)}"
          + ("" if state else "; no gateway status history (rules on status stay quiet)"), file=sys.stderr)
    try:
        result = replay(store, since, until, rules, step_s=step, state_path=state,
                        resolved_retention_s=cfg.alerts.resolved_retention_s if cfg else 900.0)
    except StoreError as e:
        raise CommandError(f"{e}; check --store") from None
    finally:
        store.close()
    if args.format == "json":
        json.dump([{"rule": e.rule, "subject": e.subject, "severity": e.severity, "start": fmt_time(e.start_ns),
                    "end": fmt_time(e.end_ns) if e.end_ns is not None else None, "summary": e.summary}
                   for e in result.timeline], sys.stdout, indent=1)
        print()
    else:
        print(f"{'start':<20}  {'end':<20}  {'lasted':>8}  {'rule':<22} subject  what")
        for line in format_timeline(result.timeline):
            print(line)
    print(f"humus alerts replay: {len(result.timeline)} alert episode(s); {result.evaluations} evaluations over "
          f"{result.rows} archived rows in {result.seconds:.1f} s", file=sys.stderr)
    return 0
