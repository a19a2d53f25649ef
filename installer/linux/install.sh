#!/usr/bin/env bash
# Install the Vigil agent for every user of this Linux machine.
#
#   sudo installer/linux/install.sh --collector vigil.school.uk:7443 \
#        --token ENROLMENT_TOKEN --ca /path/to/ca.crt [--wheel vigil-0.1.0-py3-none-any.whl]
#
# What it installs (default paths; see --help for options):
#   /opt/vigil/venv                          a virtualenv with vigil[agent]
#   /opt/vigil/bin/vigil-session             starts the agent in a desktop session
#   /opt/vigil/lib/vigil_session.py          (enrols the device as root; runs the agent)
#   /etc/vigil/agent.toml, /etc/vigil/ca.crt the collector address and CA (world-readable)
#   /etc/vigil/enrol.toml                    the enrolment token (root only)
#   /var/lib/vigil/device                    the device identity, enrolled ONCE, at install
#   /var/lib/vigil/sessions/<user>           each user's spool and state (outside $HOME)
#   /etc/xdg/autostart/vigil-agent.desktop   XDG autostart (desktops without systemd --user)
#   /etc/systemd/user/vigil-agent.service    systemd --user unit, enabled for every user
#                                            through graphical-session.target
#   /etc/systemd/system/vigil-enrol.{service,timer}  retries enrolment until it succeeds
#   /etc/systemd/system/vigil-uplink.service  the uplink relay (root), the only reader of
#                                            device.key: session agents reach the collector
#                                            through /run/vigil/uplink.sock (agent/relay.py)
# Sessions never enrol: a new user on the laptop spends no token.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: install.sh --collector HOST:PORT --token TOKEN --ca FILE [options]

Install the Vigil agent for all users (XDG autostart + systemd --user unit).

required:
  --collector HOST:PORT  the collector's stream port (7443 by default)
  --token TOKEN          an enrolment token (vigil-collector token create ...)
  --token-file FILE      read the token from FILE instead (keeps it out of `ps`)
  --ca FILE              the collector's CA certificate (ca.crt from its data dir)

options:
  --enroll HOST:PORT     the collector's enrolment port (default: collector host, port 7444)
  --wheel FILE           install this vigil wheel (default: vigil from the package index)
  --source SPEC          pip requirement to install instead (default: vigil)
  --python PY            Python 3.11+ to build the virtualenv with (default: python3)
  --root DIR             install everything under DIR (for packaging and tests)
  --no-enrol             do not enrol now (the vigil-enrol timer will)
  --prefix DIR           default /opt/vigil
  --sysconfdir DIR       default /etc/vigil
  --statedir DIR         default /var/lib/vigil (device identity, per-user sessions)
  --autostart-dir DIR    default /etc/xdg/autostart
  --unit-dir DIR         default /etc/systemd/user
  --system-unit-dir DIR  default /etc/systemd/system
  -h, --help             show this help
EOF
}

die() { echo "install.sh: $*" >&2; exit 2; }

collector="" enroll="" token="" ca="" wheel="" source_spec="vigil" python="python3" root=""
prefix="/opt/vigil" sysconfdir="/etc/vigil" autostart_dir="/etc/xdg/autostart"
unit_dir="/etc/systemd/user" statedir="/var/lib/vigil" system_unit_dir="/etc/systemd/system"
enrol_now=1

while (($#)); do
  case "$1" in
    --collector) collector="${2:?--collector needs HOST:PORT}"; shift 2 ;;
    --enroll) enroll="${2:?--enroll needs HOST:PORT}"; shift 2 ;;
    --token) token="${2:?--token needs a value}"; shift 2 ;;
    --token-file) [ -f "${2:-}" ] || die "--token-file: no such file: ${2:-}"
                  token="$(tr -d '[:space:]' <"$2")"; shift 2 ;;
    --ca) ca="${2:?--ca needs a file}"; shift 2 ;;
    --wheel) wheel="${2:?--wheel needs a file}"; shift 2 ;;
    --source) source_spec="${2:?--source needs a requirement}"; shift 2 ;;
    --python) python="${2:?--python needs an interpreter}"; shift 2 ;;
    --root) root="${2:?--root needs a directory}"; shift 2 ;;
    --prefix) prefix="${2:?}"; shift 2 ;;
    --sysconfdir) sysconfdir="${2:?}"; shift 2 ;;
    --statedir) statedir="${2:?}"; shift 2 ;;
    --system-unit-dir) system_unit_dir="${2:?}"; shift 2 ;;
    --no-enrol) enrol_now=0; shift ;;
    --autostart-dir) autostart_dir="${2:?}"; shift 2 ;;
    --unit-dir) unit_dir="${2:?}"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
done

[ -n "$collector" ] || die "--collector HOST:PORT is required (the collector's stream port)"
[[ "$collector" == *:* ]] || die "--collector: expected HOST:PORT, got '$collector'"
[ -n "$token" ] || die "--token (or --token-file) is required: run 'vigil-collector token create' on the collector"
[[ "$token" =~ ^[A-Za-z0-9._~+/=:-]+$ ]] || die "--token: unexpected characters; paste the token exactly as printed"
[ -n "$ca" ] || die "--ca FILE is required: copy ca.crt from the collector's data dir"
[ -f "$ca" ] || die "--ca: no such file: $ca"
grep -q "BEGIN CERTIFICATE" "$ca" || die "--ca: $ca is not a PEM certificate"
[ -z "$enroll" ] && enroll="${collector%:*}:7444"
[[ "$enroll" == *:* ]] || die "--enroll: expected HOST:PORT, got '$enroll'"
if [ -n "$wheel" ]; then
  [ -f "$wheel" ] || die "--wheel: no such file: $wheel"
  wheel="$(cd "$(dirname "$wheel")" && pwd)/$(basename "$wheel")"
fi
if [ -n "$root" ]; then
  mkdir -p "$root"
  root="$(cd "$root" && pwd)"
  prefix="$root$prefix" sysconfdir="$root$sysconfdir" statedir="$root$statedir"
  autostart_dir="$root$autostart_dir" unit_dir="$root$unit_dir"
  system_unit_dir="$root$system_unit_dir"
elif [ "$(id -u)" -ne 0 ]; then
  die "run as root (sudo), or pass --root DIR to install under DIR"
fi

here="$(cd "$(dirname "$0")" && pwd)"
session_py="$here/../vigil_session.py"
[ -f "$session_py" ] || die "missing $session_py: run this script from a full copy of installer/"

"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
  || die "$python is not Python 3.11 or newer: install it (Debian 12 / Ubuntu 24.04 ship one) or pass --python"
if ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
  if command -v apt-get >/dev/null && [ "$(id -u)" -eq 0 ]; then
    echo "==> installing python3-venv"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  else
    die "$python cannot create virtualenvs: install python3-venv (apt-get install python3-venv)"
  fi
fi

echo "==> virtualenv in $prefix/venv"
mkdir -p "$prefix/bin" "$prefix/lib" "$prefix/share/doc/vigil"
[ -x "$prefix/venv/bin/python" ] || "$python" -m venv "$prefix/venv"
"$prefix/venv/bin/python" -m pip install -q --upgrade pip >/dev/null
if [ -n "$wheel" ]; then
  "$prefix/venv/bin/python" -m pip install -q "${wheel}[agent]"
else
  "$prefix/venv/bin/python" -m pip install -q "${source_spec}[agent]"
fi
[ -x "$prefix/venv/bin/vigil-agent" ] || die "vigil-agent was not installed into $prefix/venv"

install -m 0644 "$session_py" "$prefix/lib/vigil_session.py"
cat >"$prefix/bin/vigil-session" <<EOF
#!/bin/sh
# Starts the Vigil agent in this desktop session, or (--enrol-device, as root) enrols the
# device once. See $prefix/lib/vigil_session.py.
exec "$prefix/venv/bin/python" "$prefix/lib/vigil_session.py" --config "$sysconfdir/agent.toml" \\
  --device-dir "$statedir/device" --sessions-dir "$statedir/sessions" "\$@"
EOF
chmod 0755 "$prefix/bin/vigil-session"
ln -sf "$prefix/venv/bin/vigil-agent" "$prefix/bin/vigil-agent"
[ -f "$here/README.md" ] && install -m 0644 "$here/README.md" "$prefix/share/doc/vigil/README.md"

echo "==> config in $sysconfdir"
mkdir -p "$sysconfdir"
install -m 0644 "$ca" "$sysconfdir/ca.crt"
# agent.toml: read by every session's agent. enrol.toml: the token, for root only (the device
# enrols once; sessions never do).
tmp="$(mktemp "$sysconfdir/.agent.toml.XXXXXX")"
cat >"$tmp" <<EOF
# Vigil agent, written by installer/linux/install.sh on $(date -u +%Y-%m-%dT%H:%MZ).
# Every key is documented in docs/configuration.md.
[agent]
collector = "$collector"
EOF
chmod 0644 "$tmp"
mv -f "$tmp" "$sysconfdir/agent.toml"
tmp="$(mktemp "$sysconfdir/.enrol.toml.XXXXXX")"
chmod 0600 "$tmp"
cat >"$tmp" <<EOF
# Vigil device enrolment (root only), written by installer/linux/install.sh.
[enroll]
server = "$enroll"
token = "$token"
ca = "$sysconfdir/ca.crt"
EOF
mv -f "$tmp" "$sysconfdir/enrol.toml"

echo "==> machine-wide state in $statedir"
# device/: written by root, read by every session's agent. sessions/: each user creates their
# own 0700 folder; 1733 (like a mail spool) lets them create it but not list the others.
install -d -m 0755 "$statedir" "$statedir/device"
install -d -m 1733 "$statedir/sessions"

echo "==> XDG autostart entry and systemd --user unit"
mkdir -p "$autostart_dir" "$unit_dir/graphical-session.target.wants"
cat >"$autostart_dir/vigil-agent.desktop" <<EOF
[Desktop Entry]
Type=Application
Name=Vigil safeguarding agent
Comment=School safeguarding monitor; run 'vigil-agent status' to see what it watches
Exec=$prefix/bin/vigil-session
Terminal=false
NoDisplay=true
X-GNOME-Autostart-enabled=true
X-GNOME-HiddenUnderSystemd=true
X-systemd-skip=true
EOF
chmod 0644 "$autostart_dir/vigil-agent.desktop"
cat >"$unit_dir/vigil-agent.service" <<EOF
[Unit]
Description=Vigil safeguarding agent for this desktop session
Documentation=file://$prefix/share/doc/vigil/README.md
PartOf=graphical-session.target
After=graphical-session.target

[Service]
Type=simple
ExecStart=$prefix/bin/vigil-session
Restart=on-failure
RestartSec=10

[Install]
WantedBy=graphical-session.target
EOF
chmod 0644 "$unit_dir/vigil-agent.service"
# What `systemctl --global enable vigil-agent.service` does, without needing a running systemd.
ln -sfn ../vigil-agent.service "$unit_dir/graphical-session.target.wants/vigil-agent.service"

echo "==> vigil-enrol timer (enrols the device until it is enrolled)"
mkdir -p "$system_unit_dir/timers.target.wants"
cat >"$system_unit_dir/vigil-enrol.service" <<EOF
[Unit]
Description=Enrol this device with the Vigil collector (once)
Documentation=file://$prefix/share/doc/vigil/README.md
ConditionPathExists=!$statedir/device/device.json
After=network-online.target
Wants=network-online.target

[Service]
Type=oneshot
ExecStart=$prefix/bin/vigil-session --enrol-device
EOF
cat >"$system_unit_dir/vigil-enrol.timer" <<EOF
[Unit]
Description=Retry Vigil device enrolment until it succeeds

[Timer]
OnBootSec=1min
OnUnitActiveSec=5min

[Install]
WantedBy=timers.target
EOF
chmod 0644 "$system_unit_dir/vigil-enrol.service" "$system_unit_dir/vigil-enrol.timer"
ln -sfn ../vigil-enrol.timer "$system_unit_dir/timers.target.wants/vigil-enrol.timer"

echo "==> vigil-uplink service (holds the device key; relays the sessions' streams)"
mkdir -p "$system_unit_dir/multi-user.target.wants"
cat >"$system_unit_dir/vigil-uplink.service" <<EOF
[Unit]
Description=Vigil uplink relay: the device key's only reader (mutual TLS to the collector)
Documentation=file://$prefix/share/doc/vigil/README.md
After=network-online.target
Wants=network-online.target

[Service]
ExecStart=$prefix/venv/bin/python -m agent.relay --device-dir $statedir/device --socket /run/vigil/uplink.sock
Restart=always
RestartSec=5
RuntimeDirectory=vigil
RuntimeDirectoryMode=0755
UMask=0077
NoNewPrivileges=yes
ProtectHome=yes
PrivateTmp=yes

[Install]
WantedBy=multi-user.target
EOF
chmod 0644 "$system_unit_dir/vigil-uplink.service"
ln -sfn ../vigil-uplink.service "$system_unit_dir/multi-user.target.wants/vigil-uplink.service"

if [ "$enrol_now" -eq 1 ]; then
  echo "==> enrolling this device"
  if "$prefix/bin/vigil-session" --enrol-device; then
    echo "enrolled: every user of this machine shares the device identity"
  else
    echo "install.sh: warning: enrolment failed (collector unreachable?); the vigil-enrol" \
         "timer retries every 5 minutes, and agents keep captures in their spool until then" >&2
  fi
fi
if [ -z "$root" ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  systemctl daemon-reload || true
  systemctl start vigil-enrol.timer || true
  systemctl start vigil-uplink.service || true
fi
# The key is root's alone from now on (the relay also enforces this when it starts).
if [ -f "$statedir/device/device.key" ]; then chmod 0600 "$statedir/device/device.key"; fi

echo "installed: the agent starts at each user's next graphical logon."
echo "check a session with: $prefix/bin/vigil-agent install-check"
