"""Humus: field sensor data acquisition for soil carbon monitoring.

The shared contract between the packages lives here: the `Observation`
record and QARTOD flags (`humus.records`), the MQTT wire format
(`humus.wire`), TOML configuration loading (`humus.config`) and the
`humus` command line (`humus.cli`).
"""

__version__ = "0.1.0"
