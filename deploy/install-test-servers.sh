#!/bin/sh
# Install the servers the test suite runs for real (Debian packages), if missing:
# Mosquitto, InfluxDB 1.x (`influxdb`) and VictoriaMetrics, and the tools tests/deploy uses. The tests start
# their own instances on free loopback ports; the packaged services are not used.
set -e
missing=
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing="$missing mosquitto"
command -v influxd >/dev/null 2>&1 || missing="$missing influxdb"
command -v victoria-metrics >/dev/null 2>&1 || missing="$missing victoria-metrics"
command -v prometheus-alertmanager >/dev/null 2>&1 || missing="$missing prometheus-alertmanager"
# tests/deploy: `systemd-analyze verify` on the units, openssl beside the certificates it checks.
command -v systemd-analyze >/dev/null 2>&1 || missing="$missing systemd"
command -v openssl >/dev/null 2>&1 || missing="$missing openssl"
# tests/observatory/test_report.py opens the soil carbon report in headless Chromium.
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
[ -z "$missing" ] && exit 0
SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
echo "Installing test servers:$missing"
$SUDO apt-get update -qq
# policy-rc.d keeps apt from starting the packaged services (and taking their default ports).
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing
