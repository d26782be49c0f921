"""Wire protocols: framing, checksums and command sequences, over a `SerialTransport`.

A protocol module knows how bytes make frames; it does not know what a probe
model's values mean (that is a driver's job). Every way a frame can fail is a
`ProtocolError` carrying the `DriverStatus` a driver should report, so
`Driver.read()` maps them without each driver repeating the table.
"""

from __future__ import annotations

from firmware_bridge.reading import DriverStatus


class ProtocolError(Exception):
    """A command whose answer did not make a valid frame (after the protocol's retries)."""

    status: DriverStatus = DriverStatus.ERROR

    def __init__(self, message: str, status: DriverStatus | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class NoResponse(ProtocolError):
    """Nothing came back in time."""

    status = DriverStatus.TIMEOUT


class ChecksumMismatch(ProtocolError):
    """A complete frame whose CRC/checksum does not match its content."""

    status = DriverStatus.CRC_ERROR


class PartialFrame(ProtocolError):
    """The start of a valid frame, cut short."""

    status = DriverStatus.PARTIAL


class GarbledFrame(ProtocolError):
    """Bytes that cannot be a valid frame (line noise, wrong baud rate, another device)."""

    status = DriverStatus.GARBLED
