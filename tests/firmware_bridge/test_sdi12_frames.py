"""SDI-12 CRC and frame parsers: the standard's worked examples and properties over any input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge.protocols import ChecksumMismatch, GarbledFrame, NoResponse, PartialFrame, ProtocolError
from firmware_bridge.protocols.sdi12 import (ADDRESSES, add_crc, check_crc, classify_incomplete, crc16, encode_crc,
                                             format_value, parse_ack, parse_address, parse_data,
                                             parse_identification, parse_ticket, parse_values, split_pages)


def test_crc_of_the_worked_example_in_the_standard():
    # SDI-12 v1.4, section 4.4.12.3: "0D0!" answered "0+3.14OqZ<CR><LF>".
    assert encode_crc(crc16(b"0+3.14")) == b"OqZ"
    assert parse_data(b"0+3.14OqZ\r\n", "0", crc=True) == [3.14]


def test_crc_of_a_published_sensor_example():
    # Vaisala WMT700 User Guide (M211095EN-H), SDI-12 CRC example: 1MC! then 1D0!.
    assert add_crc(b"1+2.7+85.2-0.2-2.7+770.5") == b"1+2.7+85.2-0.2-2.7+770.5CAH"


def test_a_wrong_crc_is_a_checksum_mismatch():
    with pytest.raises(ChecksumMismatch, match="OqZ"):
        parse_data(b"0+3.14OqY\r\n", "0", crc=True)


def test_values_examples_of_the_standard():
    # Section 4.4.8: values are a sign and up to 7 digits with an optional decimal point.
    assert parse_values("+3.14+2.718+1.414") == [3.14, 2.718, 1.414]
    assert parse_values("-1.5+22-0.001+1234567") == [-1.5, 22.0, -0.001, 1234567.0]
    assert parse_values("+.5") == [0.5]
    assert parse_values("") == []
    for bad in ("3.14", "+1.2.3", "+12345678", "+1,5", "++1"):
        with pytest.raises(GarbledFrame):
            parse_values(bad)


def test_identification_example_of_the_standard():
    # Section 4.4.3 example: version 1.3, vendor NRSYSINC, model 100000, sensor version 1.2, extra 101.
    ident = parse_identification(b"013NRSYSINC1000001.2101\r\n", "0")
    assert (ident.address, ident.sdi12_version, ident.vendor, ident.model, ident.sensor_version, ident.extra) == \
        ("0", "1.3", "NRSYSINC", "100000", "1.2", "101")


def test_measurement_tickets_for_M_and_C():
    assert parse_ticket(b"00013\r\n", "0").seconds == 1
    t = parse_ticket(b"a12009\r\n", "a", concurrent=True)
    assert (t.address, t.seconds, t.count) == ("a", 120, 9)
    with pytest.raises(GarbledFrame, match="atttnn"):
        parse_ticket(b"00013\r\n", "0", concurrent=True)


def test_answers_from_another_address_are_refused():
    with pytest.raises(GarbledFrame, match="expected '1'"):
        parse_ack(b"0\r\n", "1")
    assert parse_address(b"7\r\n") == "7"


def test_incomplete_reads_are_told_apart():
    assert isinstance(classify_incomplete(b"", "0", "0M!"), NoResponse)
    assert isinstance(classify_incomplete(b"0+1.2", "0", "0D0!"), PartialFrame)
    assert isinstance(classify_incomplete(b"\xff\x00zz", "0", "0D0!"), GarbledFrame)
    assert isinstance(parse_ticket_or(b"0001"), PartialFrame)


def parse_ticket_or(line: bytes) -> ProtocolError | None:
    try:
        parse_ticket(line, "0")
    except ProtocolError as e:
        return e
    return None


def test_pages_respect_the_35_character_limit_of_M():
    values = [format_value(1234.567 + i, 3) for i in range(9)]
    pages = split_pages(values, 35)
    assert all(len(p) <= 35 for p in pages) and len(pages) > 1
    assert "".join(pages) == "".join(values)
    assert split_pages(["+1", "+2", "+3"], 35, per_page=1) == ["+1", "+2", "+3"]


sdi_value = st.floats(min_value=-999999, max_value=999999, allow_nan=False, allow_infinity=False)


@given(st.lists(st.tuples(sdi_value, st.integers(0, 4)), max_size=12), st.sampled_from(ADDRESSES), st.booleans())
def test_formatted_values_parse_back(values, address, crc):
    texts = [format_value(v, d) for v, d in values]
    body = (address + "".join(texts)).encode()
    line = (add_crc(body) if crc else body) + b"\r\n"
    parsed = parse_data(line, address, crc=crc)
    assert parsed == [float(t) for t in texts]
    for t, (v, _) in zip(texts, values):
        assert len(t) <= 9 and abs(float(t) - v) <= 0.5


@given(st.binary(min_size=1, max_size=40), st.integers(0, 39), st.integers(1, 255))
def test_any_single_byte_change_of_a_crc_frame_is_caught(payload, pos, flip):
    body = b"0" + bytes(0x20 + b % 0x5F for b in payload)
    frame = bytearray(add_crc(body))
    pos %= len(frame)
    frame[pos] ^= flip
    try:
        text = bytes(frame).decode("ascii")
        check_crc(text)
    except (ProtocolError, UnicodeDecodeError):
        return
    pytest.fail(f"corruption at {pos} went unnoticed: {bytes(frame)!r}")


@settings(max_examples=300)
@given(st.binary(max_size=120))
def test_parsers_never_raise_anything_but_protocol_errors(data):
    for parse in (lambda d: parse_data(d, "0", crc=True), lambda d: parse_data(d, "0"),
                  lambda d: parse_ticket(d, "0"), lambda d: parse_ticket(d, "0", True),
                  lambda d: parse_identification(d, "0"), lambda d: parse_ack(d, "0"), parse_address):
        try:
            parse(data)
        except ProtocolError:
            pass
    assert isinstance(classify_incomplete(data, "0", "x"), ProtocolError)
