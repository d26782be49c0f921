"""Cost of the exact wire decoder and of the line-protocol encoder, per realistic batch.

A batch of 100 observations as a gateway sends it: 25 probes at 4 depths,
raw counts, calibrated volumetric water content (with model and
uncertainty), soil temperature and bulk EC. `decode_batch` is what every
ingest worker runs on every message; `lineprotocol.encode` is what the
InfluxDB store runs on every decoded observation. Best of several timeit
repeats, so another process on the machine inflates the figure less.

Usage: .venv/bin/python bench/wire_decode.py    (a few seconds)
"""

from __future__ import annotations

import dataclasses
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from humus.records import Observation, QualityFlag, Source  # noqa: E402
from humus.wire import decode_batch, encode_batch, obs_topic  # noqa: E402
from observatory.stores import lineprotocol  # noqa: E402

T0 = 1_790_000_000_000_000_000


def batch_observations(n: int = 100) -> list[Observation]:
    out: list[Observation] = []
    for i in range(n // 4):
        probe, depth, t = f"teros-{i // 4}", float(10 * (1 + i % 4)), T0 + i * 10**9
        common = dict(site="farm-1", gateway="gw-1", probe=probe, time_ns=t, depth_cm=depth)
        out += [
            Observation(quantity="raw_counts", value=2301.0 + i, unit="counts", flag=QualityFlag.PASS,
                        flag_test="gross_range", **common),
            Observation(quantity="vwc", value=0.197 + i / 1000, unit="m3/m3", uncertainty=0.03,
                        flag=QualityFlag.PASS, flag_test="gross_range", source=Source.CALIBRATED,
                        model_id="teros12-mineral", model_version="1", **common),
            Observation(quantity="soil_temp", value=12.5 + i / 10, unit="degC", flag=QualityFlag.PASS,
                        flag_test="gross_range", **common),
            Observation(quantity="ec_bulk", value=0.41, unit="dS/m", flag=QualityFlag.SUSPECT,
                        flag_test="spike", **common),
        ]
    return out


def best_us(fn, number: int = 200, repeat: int = 7) -> float:
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def main() -> None:
    obs = batch_observations()
    topic = obs_topic("farm-1", "gw-1")
    payload = encode_batch("farm-1", "gw-1", 7, obs, sent_ns=T0)
    decode_batch(topic, payload, now_ns=T0 + 10**12)  # warm the name cache as a running worker has
    decode_us = best_us(lambda: decode_batch(topic, payload, now_ns=T0 + 10**12))
    # Colons inside strings take the duplicate-key check's slower branch.
    colons = encode_batch("farm-1", "gw-1", 7, [dataclasses.replace(o, model_version="2026-01-01T00:00")
                                                if o.model_id else o for o in obs], sent_ns=T0)
    decode_batch(topic, colons, now_ns=T0 + 10**12)
    colons_us = best_us(lambda: decode_batch(topic, colons, now_ns=T0 + 10**12))
    encode_us = best_us(lambda: lineprotocol.encode(obs))
    print(f"batch: {len(obs)} observations, {len(payload)} bytes of JSON")
    print(f"decode_batch:        {decode_us:8.1f} us/batch  {len(obs) / decode_us * 1e6:10.0f} obs/s")
    print(f"  with ':' in strings: {colons_us:8.1f} us/batch")
    print(f"lineprotocol.encode: {encode_us:8.1f} us/batch  {len(obs) / encode_us * 1e6:10.0f} obs/s")
    print(f"RESULT wire_decode decode_us_per_100={decode_us:.1f} decode_obs_per_s={len(obs) / decode_us * 1e6:.0f} "
          f"decode_colons_us_per_100={colons_us:.1f} lp_encode_us_per_100={encode_us:.1f}")


if __name__ == "__main__":
    main()
