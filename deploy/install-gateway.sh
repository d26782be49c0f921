#!/bin/sh
# Install the Humus gateway on Debian / Raspberry Pi OS (run as root from a checkout):
#
#   sudo deploy/install-gateway.sh --dry-run                 # what it would do
#   sudo deploy/install-gateway.sh --bundle ./farm-1.gw-1    # the files `humus gateway add` made
#
# Installs: python3-venv, the system user `humus`, /opt/humus/.venv with
# humus[gateway] only (pyserial, paho-mqtt, numpy, minimalmodbus: no scipy,
# scikit-learn, InfluxDB client or broker), /etc/humus/gateway.toml from the
# example (never overwritten), the bundle's credentials (0640, group humus)
# and [mqtt] block, and humus-collect.service (enabled, not started: edit the
# probes first, then `systemctl start humus-collect`). Run it again at any
# time: what is already in place is left alone. Common options: deploy/lib.sh.
. "$(dirname "$0")/lib.sh"

BUNDLE=
while [ $# -gt 0 ]; do
    if common_option "$1"; then shift; continue; fi
    case "$1" in
        --root) ROOT=$2; shift 2 ;;
        --bundle) BUNDLE=$2; shift 2 ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
[ -z "$BUNDLE" ] || [ -f "$BUNDLE/mqtt.toml" ] || die "$BUNDLE/mqtt.toml not found: give the directory 'humus gateway add' wrote"
check_root_option

ensure_packages python3 python3-venv
ensure_user
ensure_venv gateway
ensure_dir /etc/humus 750 humus
ensure_dir /var/lib/humus 750 humus humus

if [ -n "$BUNDLE" ]; then
    install_file "$BUNDLE/mqtt.password" /etc/humus/mqtt.password 640 humus || true
    install_file "$BUNDLE/ca.crt" /etc/humus/ca.crt 644 root || true
    if [ -f "$BUNDLE/client.crt" ]; then
        install_file "$BUNDLE/client.crt" /etc/humus/client.crt 644 root || true
        install_file "$BUNDLE/client.key" /etc/humus/client.key 640 humus || true
    fi
    if [ -f "$BUNDLE/signing.key" ]; then
        # The gateway's Ed25519 key: every batch is signed (docs/wire.md, Signed batches).
        install_file "$BUNDLE/signing.key" /etc/humus/signing.key 640 humus || true
    fi
fi

# The configuration: the example with the bundle's [mqtt] block, written once.
config=$(mktemp)
trap 'rm -f "$config"' EXIT
if [ -n "$BUNDLE" ]; then
    # The broker user is SITE.GATEWAY: the [gateway] ids must be the same, or the ACL refuses every publish.
    user=$(sed -n 's/^username = "\(.*\)"$/\1/p' "$BUNDLE/mqtt.toml")
    sign=
    [ -f "$BUNDLE/signing.key" ] && sign=/etc/humus/signing.key
    awk -v block="$BUNDLE/mqtt.toml" -v site="${user%%.*}" -v gw="${user#*.}" -v sign="$sign" '
        /^\[/ { section = $0 }
        section == "[gateway]" && /^site = / { sub(/"[^"]*"/, "\"" site "\"") }
        section == "[gateway]" && /^id = / { sub(/"[^"]*"/, "\"" gw "\""); if (sign != "") { print; print "signing_key = \"" sign "\""; next } }
        /^\[mqtt\]/ { while ((getline line < block) > 0) if (line !~ /^#/) print line; skip = 1; next }
        /^\[/ && skip { skip = 0; print "" }
        !skip { print }' "$SRC/deploy/gateway.example.toml" > "$config"
else
    cp "$SRC/deploy/gateway.example.toml" "$config"
fi
install_new "$config" /etc/humus/gateway.toml 640 humus

ensure_unit humus-collect.service
daemon_reload
ensure_enabled humus-collect.service
summary
[ "$DRY_RUN" = 1 ] || [ "$CHANGES" = 0 ] || echo "next: edit the probes in /etc/humus/gateway.toml" \
    "(humus probe list shows the adapters), then: systemctl start humus-collect"
