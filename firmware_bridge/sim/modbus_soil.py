"""A Modbus RTU soil sensor (slave) for the simulator.

It answers function 3/4 (read holding/input registers) from the register
map of its model (firmware_bridge.drivers.modbus_maps), with values from
the shared `SoilModel`. Requests with a bad CRC are ignored, as the spec
requires (Modbus over Serial Line V1.02, 2.5.1.2: "the frame is
discarded"); a read outside the model's registers gets exception 02.

The CRC is computed here by our own bitwise CRC-16/MODBUS, not with
minimalmodbus: the driver checks frames with minimalmodbus, and a simulator
that borrowed the same routine would agree with any bug in it. The test
suite checks this CRC against the catalogue check value and the
specification's example.
"""

from __future__ import annotations

import random
import struct
from typing import Any

from firmware_bridge.drivers.modbus_maps import DEFAULT_MODEL, MAPS, RegisterMap, get_map
from firmware_bridge.sim.faults import FaultSwitches, apply_faults
from firmware_bridge.sim.soil import SoilModel, firmware_params

REGISTER_COUNT = 0x40     # registers 0x0000-0x003F exist; others raise exception 02


def crc16_modbus(data: bytes) -> int:
    """CRC-16/MODBUS (Modbus over Serial Line V1.02, 6.2.2): reflected poly 0xA001, init 0xFFFF."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def with_crc(frame: bytes) -> bytes:
    return frame + struct.pack("<H", crc16_modbus(frame))   # CRC is sent low byte first


class ModbusSoilFirmware:
    """A Modbus slave at `slave` playing the soil sensor `model`."""

    def __init__(self, slave: int, seed: int, faults: FaultSwitches, *, model: str = DEFAULT_MODEL,
                 soil: SoilModel | None = None, time_scale: float = 1.0, response_delay_s: float = 0.005) -> None:
        self.slave = slave
        self.map: RegisterMap = get_map(model)
        self.faults = faults
        self.soil = soil or SoilModel(seed)
        self.rng = random.Random(seed ^ 0x5EED)
        self.time_scale = time_scale
        self.delay = response_delay_s
        self._buf = bytearray()
        self._t0: float | None = None
        self._frozen: list[int] | None = None
        self.requests = 0
        extra = random.Random(seed)
        self._chem = {"ph": extra.uniform(5.5, 7.8), "nitrogen": extra.uniform(20, 120),
                      "phosphorus": extra.uniform(10, 60), "potassium": extra.uniform(80, 300)}

    # -- registers -----------------------------------------------------------
    def registers(self, now: float) -> list[int]:
        """The whole register file at `now` (frozen while `stuck_value` is on)."""
        if self.faults.stuck_value and self._frozen is not None:
            return list(self._frozen)
        if self._t0 is None:
            self._t0 = now
        state = self.soil.state((now - self._t0) * self.time_scale)
        truth = {"moisture": state.vwc * 100, "soil_temp": state.temperature_c, "ec": state.ec_us_cm, **self._chem}
        regs = [0] * REGISTER_COUNT
        for f in self.map.fields:
            value = truth[f.quantity] + self.rng.gauss(0, 1.0) * f.scale   # about one LSB of noise
            if self.faults.saturation and f.quantity == "moisture":
                value = f.high
            regs[f.register] = f.encode(value)
        self._frozen = regs if self.faults.stuck_value else None
        return regs

    # -- Firmware protocol -------------------------------------------------------
    def receive(self, data: bytes, now: float) -> list[tuple[float, bytes]]:
        self._buf += data
        out: list[tuple[float, bytes]] = []
        while len(self._buf) >= 8:       # every request we serve is 8 bytes long
            frame = bytes(self._buf[:8])
            if struct.unpack("<H", frame[6:8])[0] != crc16_modbus(frame[:6]):
                del self._buf[0]         # noise or a frame for someone else: slide by one byte
                continue
            del self._buf[:8]
            if frame[0] != self.slave:
                continue
            self.requests += 1
            out += self._answer(frame, now)
        if len(self._buf) > 256:
            self._buf.clear()
        return out

    def _answer(self, frame: bytes, now: float) -> list[tuple[float, bytes]]:
        fc = frame[1]
        start, count = struct.unpack(">HH", frame[2:6])
        if fc not in (3, 4):
            reply = with_crc(bytes([self.slave, fc | 0x80, 0x01]))
        elif not 1 <= count <= 125 or start + count > REGISTER_COUNT or fc != self.map.function_code:
            reply = with_crc(bytes([self.slave, fc | 0x80, 0x02]))
        else:
            regs = self.registers(now)[start:start + count]
            reply = with_crc(bytes([self.slave, fc, 2 * count]) + struct.pack(f">{count}H", *regs))
        return apply_faults(reply, self.faults, self.rng, delay=self.delay, crc_span=(len(reply) - 2, len(reply)))

    def tick(self, now: float) -> list[tuple[float, bytes]]:
        return []


class ModbusBusFirmware:
    """Several sensors on one RS-485 pair: each hears every frame and answers its own address."""

    def __init__(self, slaves: list[ModbusSoilFirmware]) -> None:
        self.slaves = slaves

    def receive(self, data: bytes, now: float) -> list[tuple[float, bytes]]:
        return [out for slave in self.slaves for out in slave.receive(data, now)]

    def tick(self, now: float) -> list[tuple[float, bytes]]:
        return []


def make_firmware(address: str, seed: int, faults: FaultSwitches,
                  **params: Any) -> ModbusSoilFirmware | ModbusBusFirmware:
    """Factory for `humus sim --probe modbus-soil`: address 1-247, or several ("1,2,3") for a bus.

    Params: model (a table in modbus_maps), time_scale, response_delay_s,
    soc_percent, depth_cm. On a bus, sensor i gets seed + i (its own soil).
    """
    try:
        slaves = [int(a) for a in (address or "1").split(",")]
    except ValueError:
        raise ValueError(f"Modbus address {address!r}: expected 1-247, or several separated by commas") from None
    if any(not 1 <= s <= 247 for s in slaves) or len(set(slaves)) != len(slaves):
        raise ValueError(f"Modbus address {address!r}: expected distinct addresses 1-247")
    allowed = ("model", "time_scale", "response_delay_s")
    if "model" in params and params["model"] not in MAPS:
        raise ValueError(f"model {params['model']!r}: expected one of {', '.join(sorted(MAPS))}")
    firmwares = [ModbusSoilFirmware(s, seed + i, faults, **firmware_params("modbus-soil", seed + i, params, allowed))
                 for i, s in enumerate(slaves)]
    return firmwares[0] if len(firmwares) == 1 else ModbusBusFirmware(firmwares)
