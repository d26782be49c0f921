"""Life cycle (pending -> firing -> resolved) and the built-in notifier's grouping, repeats, silences and restarts."""

from __future__ import annotations

import pytest

from observatory.alerts.config import NotifySettings
from observatory.alerts.lifecycle import AlertState, Lifecycle
from observatory.alerts.notify.builtin import BuiltinNotifier
from observatory.alerts.rules import Finding
from observatory.alerts.state import AlertStore

NS = 10**9
MIN = 60 * NS
T0 = 1_790_000_000 * NS


def finding(probe: str = "teros-a", site: str = "farm-a", rule: str = "no_data") -> Finding:
    labels = tuple(sorted({"site": site, "gateway": "gw-1", "probe": probe}.items()))
    return Finding(rule, labels, "warning", 1.0, f"no valid value from {probe}", "the cable")


def timing(for_s: float = 0.0, keep_s: float = 0.0):
    return lambda rule: (for_s, keep_s)


class Recorder:
    """A channel that keeps what it is given (the notifier's decisions are the subject here)."""

    name, attempts, hint = "recorder", 1, "nothing"

    def __init__(self) -> None:
        self.got = []

    def send(self, n) -> None:
        self.got.append(n)


def test_pending_until_the_condition_held_for_its_duration_then_firing_then_resolved():
    lc = Lifecycle(timing(for_s=300))
    assert lc.apply(T0, {"no_data": [finding()]}) == []
    (a,) = lc.alerts.values()
    assert a.state is AlertState.PENDING
    assert lc.apply(T0 + 4 * MIN, {"no_data": [finding()]}) == []
    (fired,) = lc.apply(T0 + 5 * MIN, {"no_data": [finding()]})
    assert fired.state is AlertState.FIRING
    assert fired.alert.active_at_ns == T0 and fired.alert.fired_at_ns == T0 + 5 * MIN
    (resolved,) = lc.apply(T0 + 6 * MIN, {"no_data": []})
    assert resolved.state is AlertState.RESOLVED and resolved.alert.resolved_at_ns == T0 + 6 * MIN


def test_a_pending_alert_whose_condition_stops_is_dropped_without_a_word():
    lc = Lifecycle(timing(for_s=600))
    lc.apply(T0, {"no_data": [finding()]})
    assert lc.apply(T0 + MIN, {"no_data": []}) == []
    assert lc.alerts == {}


def test_one_alert_per_rule_and_subject():
    lc = Lifecycle(timing())
    out = lc.apply(T0, {"no_data": [finding(), finding(), finding("teros-b")],
                        "flat_line": [finding(rule="flat_line")]})
    assert sorted((t.alert.rule, t.alert.subject) for t in out) == [
        ("flat_line", "farm-a/gw-1/teros-a"), ("no_data", "farm-a/gw-1/teros-a"), ("no_data", "farm-a/gw-1/teros-b")]


def test_flapping_does_not_spam(tmp_path):
    """A condition that comes and goes every minute for an hour: one firing and one resolved notification."""
    lc = Lifecycle(timing(for_s=120, keep_s=600))
    rec = Recorder()
    with AlertStore(tmp_path / "state.sqlite") as st:
        n = BuiltinNotifier(NotifySettings(group_wait_s=0, group_interval_s=60, log=False, mqtt=False), st, [rec])
        transitions = []
        t = T0
        for minute in range(90):
            on = minute < 5 or (minute < 60 and minute % 2 == 0)
            transitions += lc.apply(t, {"no_data": [finding()] if on else []})
            n.tick(t, lc.alerts.values())
            t += MIN
        assert n.flush(5)
    assert [x.state for x in transitions] == [AlertState.FIRING, AlertState.RESOLVED]
    assert transitions[1].time_ns == T0 + (58 + 10) * MIN     # last true at minute 58, keep_firing_for 10 min
    assert [(len(x.firing), len(x.resolved)) for x in rec.got] == [(1, 0), (0, 1)]


def test_notifications_group_per_site_and_wait_for_the_group(tmp_path):
    lc = Lifecycle(timing())
    rec = Recorder()
    with AlertStore(tmp_path / "state.sqlite") as st:
        n = BuiltinNotifier(NotifySettings(group_wait_s=30, log=False, mqtt=False), st, [rec])
        lc.apply(T0, {"no_data": [finding("teros-a")]})
        assert n.tick(T0, lc.alerts.values()) == []
        lc.apply(T0 + 10 * NS, {"no_data": [finding("teros-a"), finding("teros-b"), finding("x", site="farm-b")]})
        assert n.tick(T0 + 10 * NS, lc.alerts.values()) == []
        sent = n.tick(T0 + 30 * NS, lc.alerts.values())
        assert [(x.group_labels["site"], sorted(a.subject for a in x.firing)) for x in sent] == [
            ("farm-a", ["farm-a/gw-1/teros-a", "farm-a/gw-1/teros-b"])]
        sent = n.tick(T0 + 40 * NS, lc.alerts.values())
        assert [x.group_labels["site"] for x in sent] == ["farm-b"]
        n.close()


def test_an_unchanged_group_repeats_only_at_the_repeat_interval(tmp_path):
    lc = Lifecycle(timing())
    with AlertStore(tmp_path / "state.sqlite") as st:
        n = BuiltinNotifier(NotifySettings(group_wait_s=0, repeat_interval_s=3600, log=False, mqtt=False), st, [])
        counts = []
        for k in range(0, 121):
            t = T0 + k * MIN
            lc.apply(t, {"no_data": [finding()]})
            counts.append(len(n.tick(t, lc.alerts.values())))
        assert [k for k, c in enumerate(counts) if c] == [0, 60, 120]


def test_a_restart_does_not_resend_firing_alerts(tmp_path):
    path = tmp_path / "state.sqlite"
    settings = NotifySettings(group_wait_s=0, repeat_interval_s=3600, log=False, mqtt=False)
    lc = Lifecycle(timing())
    with AlertStore(path) as st:
        n = BuiltinNotifier(settings, st, [])
        transitions = lc.apply(T0, {"no_data": [finding()]})
        st.save(lc.alerts.values(), transitions)
        assert len(n.tick(T0, lc.alerts.values())) == 1
    # The service restarts: the life cycle and the notification log come back from the state file.
    with AlertStore(path) as st:
        lc2 = Lifecycle(timing())
        lc2.restore(st.load())
        n2 = BuiltinNotifier(settings, st, [])
        sent = []
        for k in range(1, 30):
            assert lc2.apply(T0 + k * MIN, {"no_data": [finding()]}) == []      # still firing: no new transition
            sent += n2.tick(T0 + k * MIN, lc2.alerts.values())
        assert sent == []
        (a,) = lc2.firing()
        assert a.fired_at_ns == T0


def test_a_silence_holds_and_expires(tmp_path):
    lc = Lifecycle(timing())
    with AlertStore(tmp_path / "state.sqlite") as st:
        n = BuiltinNotifier(NotifySettings(group_wait_s=0, group_interval_s=0, log=False, mqtt=False), st, [])
        st.add_silence({"probe": "teros-a", "rule": "no_data"}, T0, T0 + 30 * MIN, "test", "replacing it", T0)
        st.add_silence({"probe": "teros-z"}, T0, T0 + 300 * MIN, "test", "another probe", T0)
        sent_at = []
        for k in range(60):
            t = T0 + k * MIN
            lc.apply(t, {"no_data": [finding("teros-a")]})
            if n.tick(t, lc.alerts.values()):
                sent_at.append(k)
        assert sent_at == [30]
        assert [s.comment for s in st.silences(T0 + 31 * MIN)] == ["another probe"]


def test_a_silence_can_be_expired_early(tmp_path):
    with AlertStore(tmp_path / "state.sqlite") as st:
        s = st.add_silence({"site": "farm-a"}, T0, T0 + 3600 * NS, "test", "", T0)
        assert st.expire_silence(s.id, T0 + NS)
        assert not st.expire_silence(s.id, T0 + 2 * NS)
        assert st.silences(T0 + 2 * NS) == []


@pytest.mark.parametrize("send_resolved", [True, False])
def test_resolved_alerts_are_announced_only_if_their_firing_was(tmp_path, send_resolved):
    lc = Lifecycle(timing())
    rec = Recorder()
    with AlertStore(tmp_path / "state.sqlite") as st:
        n = BuiltinNotifier(NotifySettings(group_wait_s=0, group_interval_s=0, send_resolved=send_resolved, log=False,
                                           mqtt=False), st, [rec])
        lc.apply(T0, {"no_data": [finding("teros-a")]})
        n.tick(T0, lc.alerts.values())
        lc.apply(T0 + MIN, {"no_data": []})
        n.tick(T0 + MIN, lc.alerts.values())
        assert n.flush(5)
    assert [(len(x.firing), len(x.resolved)) for x in rec.got] == ([(1, 0), (0, 1)] if send_resolved else [(1, 0)])
