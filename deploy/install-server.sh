#!/bin/sh
# Install the Humus centre on Debian (run as root from a checkout):
#
#   sudo deploy/install-server.sh --host broker.example.org --dry-run
#   sudo deploy/install-server.sh --host broker.example.org [--workers 2] [--influxdb]
#
# Installs: Mosquitto with deploy/mosquitto/humus.conf (TLS listeners, no
# anonymous access, plaintext on loopback only, the queue limits ingest
# needs), the local CA and server certificate (`humus gateway init`), one
# broker user per ingest worker and one for alerts; the system user `humus`;
# /opt/humus/.venv with humus[centre]; /etc/humus/ingest-N.toml (written
# once, never overwritten) and humus-ingest@N.service, enabled and started;
# humus-alerts.service (installed, not enabled). With --influxdb: InfluxDB
# with authentication on, its database, retention policy and users
# (`humus archive influx-setup`), and the ingest workers write with the
# write-only user; without, the archive is SQLite in /var/lib/humus.
# Run it again at any time: what is in place is left alone. Gateways are
# added with `humus gateway add SITE GATEWAY` (docs/deploy.md).
# Common options: deploy/lib.sh.
. "$(dirname "$0")/lib.sh"

HOST=
WORKERS=1
INFLUX=0
while [ $# -gt 0 ]; do
    if common_option "$1"; then shift; continue; fi
    case "$1" in
        --root) ROOT=$2; shift 2 ;;
        --host) HOST=$2; shift 2 ;;
        --workers) WORKERS=$2; shift 2 ;;
        --influxdb) INFLUX=1; shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
[ -n "$HOST" ] || die "--host NAME is required: the name (or address) gateways connect to"
case "$WORKERS" in ''|*[!0-9]*|0) die "--workers $WORKERS: expected a number of ingest workers, 1 or more" ;; esac
check_root_option

HUMUS=${HUMUS:-$PREFIX/.venv/bin/humus}
BROKER="$ROOT/etc/mosquitto/humus"
CONF="$ROOT/etc/humus"

packages="python3 python3-venv mosquitto"
[ "$INFLUX" = 0 ] || packages="$packages influxdb"
ensure_packages $packages
ensure_user
ensure_venv centre
ensure_dir /etc/humus 750 humus
ensure_dir /var/lib/humus 750 humus humus

# The broker.
BROKER_CHANGED=0
USERS_CHANGED=0
if install_file "$SRC/deploy/mosquitto/humus.conf" /etc/mosquitto/conf.d/humus.conf 644 root; then BROKER_CHANGED=1; fi
if [ -f "$BROKER/humus-broker.toml" ] && grep -qx "host = \"$HOST\"" "$BROKER/humus-broker.toml"; then
    ok "broker CA, server certificate for $HOST, password and ACL files ($BROKER)"
else
    act "humus gateway init --host $HOST (CA, server certificate, password and ACL files)" \
        $HUMUS gateway --broker-dir "$BROKER" init --host "$HOST"
    BROKER_CHANGED=1
fi

# register NAME ROLE: the service's broker user and its [mqtt] block in /etc/humus.
register() {
    if [ -f "$BROKER/passwd" ] && grep -q "^$1:" "$BROKER/passwd" && [ -f "$CONF/$1.mqtt.toml" ]; then
        ok "broker user $1 ($2)"
    else
        act "broker user $1 ($2): humus gateway service $2 $1" \
            $HUMUS gateway --broker-dir "$BROKER" service "$2" "$1" --out "$CONF" --rotate
        USERS_CHANGED=1
    fi
}

if [ "$INFLUX" = 1 ]; then
    store="influxdb://127.0.0.1:8086/humus?rp=humus\&credentials=/etc/humus/influx-ingest.toml"
    state='state_file = "/var/lib/humus/ingest-state.sqlite"'
else
    store="sqlite:/var/lib/humus/archive.sqlite"
    state=
fi
# The gateway registry: only gateways added with `humus gateway add` are accepted, and those with
# a signing key must sign (docs/wire.md, Signed batches). Empty until the first gateway is added.
registry=$(mktemp)
echo "# Gateways ingest accepts, with their Ed25519 public keys; kept by 'humus gateway add/remove'." > "$registry"
install_new "$registry" "/etc/humus/gateways.toml" 644 humus
rm -f "$registry"
i=1
while [ "$i" -le "$WORKERS" ]; do
    register "ingest-$i" ingest
    config=$(mktemp)
    {
        echo "# Humus ingest worker $i (humus-ingest@$i.service); keys: /opt/humus/docs/ingest.md"
        echo "[ingest]"
        echo "store = \"$store\"" | sed 's/\\&/\&/'
        [ -z "$state" ] || echo "$state"
        echo "client_id = \"ingest-$i\"          # stable: the broker keeps this worker's session under it"
        echo "group = \"humus-ingest\""
        echo "subscription = \"shared\""
        echo "registry_file = \"/etc/humus/gateways.toml\"   # humus gateway add; unknown gateways refused"
        echo
        [ -f "$CONF/ingest-$i.mqtt.toml" ] && sed -n '/^\[mqtt\]/,$p' "$CONF/ingest-$i.mqtt.toml"
    } > "$config"
    if [ "$DRY_RUN" = 1 ] && [ ! -f "$CONF/ingest-$i.mqtt.toml" ]; then
        if [ -e "$CONF/ingest-$i.toml" ]; then ok "/etc/humus/ingest-$i.toml exists (left as it is)"
        else act "install /etc/humus/ingest-$i.toml (640, group $(owner_group humus))" true; fi
    else
        install_new "$config" "/etc/humus/ingest-$i.toml" 640 humus
    fi
    rm -f "$config"
    i=$((i + 1))
done
register alerts-1 alerts

if [ "$SYSTEM" = 1 ]; then
    if [ "$BROKER_CHANGED" = 1 ]; then
        act "systemctl restart mosquitto (new listeners or certificates)" systemctl restart mosquitto
    elif [ "$USERS_CHANGED" = 1 ]; then
        act "systemctl reload mosquitto (new users)" systemctl reload mosquitto
    fi
fi

# InfluxDB: authentication on, then database, retention policy and users over the HTTP API.
if [ "$INFLUX" = 1 ]; then
    iconf="$ROOT/etc/influxdb/influxdb.conf"
    if grep -Eq '^[[:space:]]*auth-enabled = true' "$iconf" 2>/dev/null; then
        ok "InfluxDB authentication on ($iconf)"
    else
        act "turn InfluxDB authentication on in /etc/influxdb/influxdb.conf and restart it" sh -c "
            sed -i 's/^\([[:space:]]*\)#*[[:space:]]*auth-enabled = false/\1auth-enabled = true/' '$iconf' &&
            grep -Eq '^[[:space:]]*auth-enabled = true' '$iconf' &&
            { [ '$SYSTEM' = 0 ] || systemctl restart influxdb; }"
    fi
    if [ -f "$CONF/influx-ingest.toml" ] && [ -f "$CONF/influx-reader.toml" ]; then
        ok "InfluxDB users (credentials in /etc/humus/influx-*.toml)"
    elif [ "$DRY_RUN" = 1 ] || [ "$SYSTEM" = 1 ]; then
        act "InfluxDB database humus, retention policy, users: humus archive influx-setup" \
            $HUMUS archive influx-setup influxdb://127.0.0.1:8086/humus --config-dir "$CONF"
    fi
fi

ensure_unit humus-ingest@.service
ensure_unit humus-alerts.service
daemon_reload
i=1
while [ "$i" -le "$WORKERS" ]; do
    ensure_enabled "humus-ingest@$i.service" --now
    i=$((i + 1))
done
summary
[ "$DRY_RUN" = 1 ] || [ "$CHANGES" = 0 ] || echo "next: add gateways with" \
    "'$HUMUS gateway add SITE GATEWAY' and copy each bundle to its gateway (docs/deploy.md)"
