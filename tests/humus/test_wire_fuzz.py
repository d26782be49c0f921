"""Whatever arrives on a topic, decode_batch answers a valid Batch or a documented WireError, nothing else.

The ingest worker stores a message's rejection reason in its dead-letter
table; an exception of any other kind used to end there as "decode_error"
with a traceback's text. Documents are built around a valid batch with
mutated fields, so the fuzzer reaches the checks deep in an observation
and not only the JSON parser.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from hypothesis import HealthCheck, given, settings, strategies as st

from humus.records import ID_PATTERN, QUANTITY_PATTERN, text_is_clean
from humus.wire import MAX_MESSAGE_CHARS, Batch, Rejection, WireError, decode_batch, encode_batch, obs_topic

from test_wire import T0, TOPIC, sample

DOCS = Path(__file__).resolve().parents[2] / "docs" / "wire.md"
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def documented_reasons() -> set[str]:
    """The first column of the table under "## Rejections" in docs/wire.md."""
    section = DOCS.read_text().split("## Rejections", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.M))


DOCUMENTED = documented_reasons()


def test_every_rejection_reason_is_documented():
    assert DOCUMENTED == {r.value for r in Rejection}


def check(topic: str, payload: bytes) -> Batch | None:
    """Decode; a rejection must be documented and one short line, an acceptance must be writable again."""
    try:
        batch = decode_batch(topic, payload, now_ns=T0)
    except WireError as e:
        assert type(e.reason) is Rejection and e.reason.value in DOCUMENTED
        message = str(e)
        assert message and len(message) <= MAX_MESSAGE_CHARS and "\n" not in message and "\r" not in message
        return None
    for o in batch.observations:
        assert ID_PATTERN.fullmatch(o.probe) and QUANTITY_PATTERN.fullmatch(o.quantity)
        assert all(t is None or text_is_clean(t) for t in (o.unit, o.flag_test, o.model_id, o.model_version))
    # Accepted means exact: the collector's own encoder writes it back (allow_nan=False: all finite)
    # and it decodes to the same thing.
    again = encode_batch(batch.site, batch.gateway, batch.seq, batch.observations, sent_ns=batch.sent_ns)
    assert encode_batch(batch.site, batch.gateway, batch.seq, decode_batch(topic, again, now_ns=T0).observations,
                        sent_ns=batch.sent_ns) == again
    return batch


any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=12)
numbers = (st.integers() | st.sampled_from([2**31, 2**63, -1, 10**400, -10**400, 9, 1])
           | st.floats() | st.sampled_from([1e308, -0.0, 5e-324]))
json_values = st.recursive(
    st.none() | st.booleans() | numbers | any_text | st.sampled_from(["raw", "calibrated", "farm-1", "vwc", ""]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=3),
    max_leaves=12,
)
topics = (st.just(TOPIC) | st.text(max_size=60)
          | st.builds(lambda s, g: f"humus/v1/{s}/{g}/obs", any_text, any_text))
BATCH_KEYS = ["schema", "site", "gateway", "seq", "sent_ns", "observations", "extra"]
ITEM_KEYS = ["probe", "quantity", "time_ns", "value", "unit", "flag", "source", "wavelengths_nm", "depth_cm",
             "uncertainty", "flag_test", "model_id", "model_version", "rev", "extra"]


@st.composite
def mutated_batches(draw) -> bytes:
    """A valid batch with up to three fields replaced or removed, spelled and encoded in various ways."""
    doc = json.loads(encode_batch("farm-1", "gw-1", 7, sample(), sent_ns=T0))
    for _ in range(draw(st.integers(0, 3))):
        in_item = draw(st.booleans())
        target = draw(st.sampled_from(doc["observations"])) if in_item and type(doc.get("observations")) is list \
            and doc["observations"] and all(type(x) is dict for x in doc["observations"]) else doc
        key = draw(st.sampled_from(ITEM_KEYS if target is not doc else BATCH_KEYS))
        if draw(st.integers(0, 4)) == 0:
            target.pop(key, None)
        else:
            target[key] = draw(json_values)
    text = json.dumps(doc, ensure_ascii=draw(st.booleans()), allow_nan=True, indent=draw(st.sampled_from([None, 1])))
    if draw(st.integers(0, 5)) == 0:  # a key twice, spelled as the document spells keys
        key = draw(st.sampled_from(ITEM_KEYS + BATCH_KEYS))
        text = text.replace(f'"{key}": ', f'"{key}": 1, "{key}": ', 1)
    encoding = draw(st.sampled_from(["utf-8"] * 6 + ["utf-16", "utf-8-sig", "utf-32-le"]))
    return text.encode(encoding, "surrogatepass")


@FUZZ
@given(topics, st.binary(max_size=400))
def test_arbitrary_bytes_on_any_topic_are_answered_with_a_documented_reason(topic, payload):
    check(topic, payload)


@FUZZ
@given(mutated_batches())
def test_mutated_batches_are_decoded_exactly_or_refused_with_a_documented_reason(payload):
    check(TOPIC, payload)


@FUZZ
@given(st.dictionaries(st.sampled_from(ITEM_KEYS), json_values))
def test_arbitrary_observation_objects_are_answered_with_a_documented_reason(fields):
    payload = json.dumps({"schema": "humus/v1", "site": "farm-1", "gateway": "gw-1", "seq": 1, "sent_ns": 1,
                          "observations": [fields]}).encode()
    check(TOPIC, payload)


def test_the_mutation_strategy_reaches_acceptance_and_every_observation_reason():
    # Guard against a fuzzer that only ever exercises the JSON parser.
    seen: set[object] = set()

    @settings(max_examples=300, deadline=None, database=None, derandomize=True)
    @given(mutated_batches())
    def collect(payload):
        try:
            decode_batch(TOPIC, payload, now_ns=T0)
            seen.add("accepted")
        except WireError as e:
            seen.add(e.reason)

    collect()
    assert {"accepted", Rejection.BAD_VALUE, Rejection.BAD_SCHEMA, Rejection.MALFORMED_JSON} <= seen


def test_the_valid_batch_used_for_mutations_is_itself_accepted():
    assert check(obs_topic("farm-1", "gw-1"), encode_batch("farm-1", "gw-1", 7, sample(), sent_ns=T0)) is not None
