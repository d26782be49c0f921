"""Modbus RTU through minimalmodbus, over our `SerialTransport`.

minimalmodbus does the framing and the CRC (Modbus over Serial Line V1.02,
section 2.5.1 "RTU transmission mode" and appendix B "CRC generation"); we
never build or check an RTU frame by hand here. minimalmodbus wants a
pyserial-like object and would open its own port, which would bypass our
reconnect, back-off and exclusive-access handling, so `TransportSerial`
adapts a `SerialTransport` to the small part of the ``serial.Serial``
surface that ``minimalmodbus.Instrument._communicate`` uses (open/close,
is_open, port, baudrate, timeout, read, write, reset_input_buffer,
reset_output_buffer, flush) and is assigned as the instrument's ``serial``.

It also keeps the last request and the bytes read, so a failure that
minimalmodbus reports as one `InvalidResponseError` can be told apart:
a frame cut short (PARTIAL), bytes that do not even start like our answer
(GARBLED), or a complete frame with a wrong CRC (CRC_ERROR).
"""

from __future__ import annotations

import minimalmodbus

from firmware_bridge.protocols import ChecksumMismatch, GarbledFrame, NoResponse, PartialFrame, ProtocolError
from firmware_bridge.transport import SerialTransport

EXCEPTION_CODES = {   # Modbus Application Protocol V1.1b3, section 7 "MODBUS Exception Responses"
    1: "illegal function", 2: "illegal data address", 3: "illegal data value", 4: "slave device failure",
    5: "acknowledge", 6: "slave device busy", 8: "memory parity error", 10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}


class TransportSerial:
    """The pyserial surface minimalmodbus calls, backed by a `SerialTransport`."""

    def __init__(self, transport: SerialTransport, timeout: float) -> None:
        self.transport = transport
        self.timeout = timeout
        self.write_timeout = 2.0
        self.last_request = b""
        self.last_answer = b""
        self.last_wanted = 0

    # minimalmodbus keys its inter-frame silence bookkeeping by port name.
    @property
    def port(self) -> str:
        return self.transport.port

    @property
    def baudrate(self) -> int:
        return self.transport.settings.baudrate

    @property
    def is_open(self) -> bool:
        """Always True: the transport opens (and reopens) on demand, with its own back-off."""
        return True

    def open(self) -> None:
        self.transport.ensure_open()

    def close(self) -> None:
        """minimalmodbus may close after a call; the transport's life is the driver's business."""

    def write(self, data: bytes) -> int:
        self.last_request, self.last_answer, self.last_wanted = bytes(data), b"", 0
        self.transport.write(data)
        return len(data)

    def read(self, size: int) -> bytes:
        self.last_wanted = size
        self.last_answer = self.transport.read_exact(size, self.timeout)
        return self.last_answer

    def reset_input_buffer(self) -> None:
        self.transport.reset_input()

    def reset_output_buffer(self) -> None:
        pass

    def flush(self) -> None:
        pass


def instrument(transport: SerialTransport, slave: int,
               timeout: float) -> tuple[minimalmodbus.Instrument, TransportSerial]:
    """A minimalmodbus Instrument that talks through `transport`."""
    if not 1 <= slave <= 247:
        raise ValueError(f"Modbus address {slave}: expected 1-247")
    port = TransportSerial(transport, timeout)
    inst = minimalmodbus.Instrument(port, slave, mode=minimalmodbus.MODE_RTU)  # type: ignore[arg-type]
    inst.clear_buffers_before_each_transaction = True   # drop a late answer to an earlier request
    return inst, port


def classify(error: Exception, port: TransportSerial) -> ProtocolError:
    """The ProtocolError (and so the driver status) for a minimalmodbus failure."""
    if isinstance(error, minimalmodbus.NoResponseError):
        return NoResponse("no answer (check the address, RS-485 A/B wiring, baud rate and power)")
    if isinstance(error, minimalmodbus.SlaveReportedException):
        return ProtocolError(f"the sensor answered with a Modbus exception: {error} "
                             "(check the register map / sensor model)")
    answer, request = port.last_answer, port.last_request
    starts_right = len(answer) >= 2 and len(request) >= 2 and answer[0] == request[0] and \
        (answer[1] & 0x7F) == request[1]
    if not starts_right:
        return GarbledFrame(f"the answer is not a Modbus reply from this address ({answer[:16].hex(' ')}...); "
                            "another device on the bus, or wrong baud rate?")
    if len(answer) < port.last_wanted and not (answer[1] & 0x80):
        return PartialFrame(f"answer cut short: {len(answer)} of {port.last_wanted} bytes")
    if "hecksum" in str(error):
        return ChecksumMismatch("answer with a wrong CRC (electrical noise? check termination and shielding)")
    return GarbledFrame(f"invalid Modbus answer: {error}")


def read_registers(inst: minimalmodbus.Instrument, port: TransportSerial, start: int, count: int,
                   function_code: int, retries: int = 1) -> list[int]:
    """`count` unsigned 16-bit registers from `start`; ProtocolError after `retries` retries.

    CRC errors, partial and garbled answers are retried (noise is transient);
    silence and exception responses are not (they will not change in 50 ms).
    PortAbsent from the transport propagates unchanged.
    """
    last: ProtocolError | None = None
    for _ in range(retries + 1):
        try:
            return list(inst.read_registers(start, count, functioncode=function_code))
        except (minimalmodbus.ModbusException, ValueError) as e:
            last = classify(e, port)
            if isinstance(last, (NoResponse,)) or type(last) is ProtocolError:
                raise last from None
    assert last is not None
    raise last
