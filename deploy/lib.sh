# Shared by install-gateway.sh and install-server.sh (POSIX sh, sourced).
#
# Every step looks first and acts only when something differs, so running an
# installer twice changes nothing the second time. Output, one line a step:
#   ok: ...        already as wanted
#   would: ...     --dry-run: what a real run would change (nothing is changed)
#   doing: ...     a real run changing it
# and a last line counting the changes.
#
# Options common to both installers:
#   --dry-run      print what would change, change nothing
#   --no-system    skip packages, users, the virtual environment and systemctl
#   --root DIR     lay out the files under DIR instead of / (tests, images);
#                  needs --no-system or --dry-run

DRY_RUN=0
ROOT=
SYSTEM=1
CHANGES=0
PREFIX=/opt/humus
SRC=$(cd "$(dirname "$0")/.." && pwd)

common_option() {
    case "$1" in
        --dry-run) DRY_RUN=1 ;;
        --no-system) SYSTEM=0 ;;
        *) return 1 ;;
    esac
}

die() { echo "$(basename "$0"): $*" >&2; exit 1; }
ok() { echo "ok: $*"; }

check_root_option() {
    [ -z "$ROOT" ] || [ "$SYSTEM" = 0 ] || [ "$DRY_RUN" = 1 ] || die "--root needs --no-system (or --dry-run)"
    [ "$DRY_RUN" = 1 ] || [ "$(id -u)" = 0 ] || [ -n "$ROOT" ] || die "run as root (or with --dry-run)"
}

# act DESCRIPTION COMMAND...: run COMMAND unless --dry-run; count it either way.
act() {
    what=$1; shift
    CHANGES=$((CHANGES + 1))
    if [ "$DRY_RUN" = 1 ]; then
        echo "would: $what"
    else
        echo "doing: $what"
        "$@" || die "failed: $what"
    fi
}

group_exists() { getent group "$1" >/dev/null 2>&1; }

# The group files get: GROUP when it exists (or will: --dry-run of a first install), else root.
owner_group() {
    if group_exists "$1" || { [ "$DRY_RUN" = 1 ] && [ "$SYSTEM" = 1 ]; }; then echo "$1"; else echo root; fi
}

# ensure_dir DIR MODE GROUP [OWNER]
ensure_dir() {
    d="$ROOT$1"; mode=$2; grp=$(owner_group "$3"); own=root
    [ -z "$4" ] || ! id -u "$4" >/dev/null 2>&1 || own=$4
    [ -z "$4" ] || [ "$DRY_RUN" = 0 ] || [ "$SYSTEM" = 0 ] || own=$4
    if [ -d "$d" ] && [ "$(stat -c '%a %U %G' "$d")" = "$mode $own $grp" ]; then
        ok "$1 ($mode, $own:$grp)"
    else
        act "directory $1 ($mode, $own:$grp)" install -d -m "$mode" -o "$own" -g "$grp" "$d"
    fi
}

# install_file SRC DEST MODE GROUP: copy when content, mode or group differ.
install_file() {
    src=$1; dest="$ROOT$2"; mode=$3; grp=$(owner_group "$4")
    if [ -f "$dest" ] && cmp -s "$src" "$dest" && [ "$(stat -c '%a %G' "$dest")" = "$mode $grp" ]; then
        ok "$2"
        return 1
    fi
    act "install $2 ($mode, group $grp)" install -D -m "$mode" -g "$grp" "$src" "$dest"
    return 0
}

# install_new SRC DEST MODE GROUP: copy only when DEST does not exist (never overwrite an edited file).
install_new() {
    if [ -e "$ROOT$2" ]; then
        ok "$2 exists (left as it is)"
    else
        install_file "$@" || true
    fi
}

ensure_packages() {
    [ "$SYSTEM" = 1 ] || return 0
    missing=
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
    done
    if [ -z "$missing" ]; then
        ok "packages $*"
    else
        act "apt-get install$missing" sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq$missing"
    fi
}

ensure_user() {
    [ "$SYSTEM" = 1 ] || return 0
    if id -u humus >/dev/null 2>&1; then
        ok "system user humus"
    else
        act "create system user humus (no login, home /var/lib/humus)" \
            useradd --system --user-group --home-dir /var/lib/humus --no-create-home --shell /usr/sbin/nologin humus
    fi
}

# The hash of what pip would install: a changed source means a reinstall, an unchanged one nothing.
source_hash() {
    (cd "$SRC" && find pyproject.toml humus collector firmware_bridge calibration observatory -type f \
        \( -name '*.py' -o -name '*.toml' -o -name '*.json' \) | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16)
}

# ensure_venv ROLE: PREFIX/.venv with Humus[ROLE] from SRC, and PREFIX/docs.
ensure_venv() {
    role=$1
    if [ "$SYSTEM" = 1 ]; then
        want="$role $(source_hash)"
        if [ -x "$PREFIX/.venv/bin/humus" ] && [ "$(cat "$PREFIX/.venv/.humus-installed" 2>/dev/null)" = "$want" ]; then
            ok "$PREFIX/.venv (humus[$role], source $(source_hash))"
        else
            "$SRC/deploy/ensure-python.sh" python3 || die "Python 3.11+ with venv is needed"
            act "virtual environment $PREFIX/.venv with humus[$role] (no test or demo extras)" sh -c "
                python3 -m venv '$PREFIX/.venv' &&
                '$PREFIX/.venv/bin/pip' install -q --upgrade pip &&
                '$PREFIX/.venv/bin/pip' install -q '$SRC[$role]' &&
                echo '$want' > '$PREFIX/.venv/.humus-installed'"
        fi
    fi
    for doc in "$SRC"/docs/*.md; do
        install_file "$doc" "$PREFIX/docs/$(basename "$doc")" 644 root || true
    done
}

# ensure_unit NAME: install deploy/systemd/NAME; daemon-reload when it changed.
UNITS_CHANGED=0
ensure_unit() {
    if install_file "$SRC/deploy/systemd/$1" "/etc/systemd/system/$1" 644 root; then
        UNITS_CHANGED=1
    fi
}

daemon_reload() {
    [ "$SYSTEM" = 1 ] && [ "$UNITS_CHANGED" = 1 ] && act "systemctl daemon-reload" systemctl daemon-reload
    return 0
}

# ensure_enabled UNIT [--now]
ensure_enabled() {
    [ "$SYSTEM" = 1 ] || return 0
    if systemctl is-enabled -q "$1" 2>/dev/null; then
        ok "$1 enabled"
    else
        act "systemctl enable${2:+ $2} $1" systemctl enable $2 "$1"
    fi
}

summary() {
    if [ "$CHANGES" = 0 ]; then
        echo "nothing to do: everything is already installed"
    elif [ "$DRY_RUN" = 1 ]; then
        echo "dry run: $CHANGES change(s) would be made; nothing was changed"
    else
        echo "$CHANGES change(s) made"
    fi
}
