"""Probe firmware simulators played on pseudo-terminals (tests, demo, `humus sim`)."""
