#!/usr/bin/env bash
# Remove what installer/linux/install.sh installed. The device identity and the users' session
# data (/var/lib/vigil: spools not yet sent) are left alone unless --purge-user-data.
#
#   sudo installer/linux/uninstall.sh [--root DIR] [--keep-config] [--purge-user-data]
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: uninstall.sh [--root DIR] [--prefix DIR] [--sysconfdir DIR] [--statedir DIR]
                    [--autostart-dir DIR] [--unit-dir DIR] [--system-unit-dir DIR]
                    [--keep-config] [--purge-user-data]

Remove the Vigil agent: the virtualenv, the autostart entry, the systemd --user unit and
(unless --keep-config) /etc/vigil. Agents already running stop at the users' next logout.
  --purge-user-data   also delete /var/lib/vigil (the device identity and every session's
                      captures not yet sent: send them first with the collector reachable)
                      and any per-user /home/*/.local/share/vigil-agent
USAGE
}

die() { echo "uninstall.sh: $*" >&2; exit 2; }

root="" prefix="/opt/vigil" sysconfdir="/etc/vigil" autostart_dir="/etc/xdg/autostart"
unit_dir="/etc/systemd/user" statedir="/var/lib/vigil" system_unit_dir="/etc/systemd/system"
keep_config=0 purge=0
while (($#)); do
  case "$1" in
    --root) root="${2:?--root needs a directory}"; shift 2 ;;
    --prefix) prefix="${2:?}"; shift 2 ;;
    --sysconfdir) sysconfdir="${2:?}"; shift 2 ;;
    --statedir) statedir="${2:?}"; shift 2 ;;
    --system-unit-dir) system_unit_dir="${2:?}"; shift 2 ;;
    --autostart-dir) autostart_dir="${2:?}"; shift 2 ;;
    --unit-dir) unit_dir="${2:?}"; shift 2 ;;
    --keep-config) keep_config=1; shift ;;
    --purge-user-data) purge=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
done
if [ -n "$root" ]; then
  [ -d "$root" ] || die "--root: no such directory: $root"
  prefix="$root$prefix" sysconfdir="$root$sysconfdir" statedir="$root$statedir"
  autostart_dir="$root$autostart_dir" unit_dir="$root$unit_dir"
  system_unit_dir="$root$system_unit_dir"
elif [ "$(id -u)" -ne 0 ]; then
  die "run as root (sudo), or pass --root DIR"
fi
# Refuse to rm -rf something that is clearly not a Vigil install.
if [ -e "$prefix" ] && [ ! -e "$prefix/bin/vigil-session" ] && [ ! -e "$prefix/venv" ]; then
  die "$prefix does not look like a Vigil install (no bin/vigil-session, no venv); not removing it"
fi

if [ -z "$root" ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  systemctl stop vigil-enrol.timer 2>/dev/null || true
  systemctl stop vigil-uplink.service 2>/dev/null || true
fi
rm -f "$unit_dir/graphical-session.target.wants/vigil-agent.service" \
      "$unit_dir/vigil-agent.service" "$autostart_dir/vigil-agent.desktop" \
      "$system_unit_dir/timers.target.wants/vigil-enrol.timer" \
      "$system_unit_dir/vigil-enrol.timer" "$system_unit_dir/vigil-enrol.service" \
      "$system_unit_dir/multi-user.target.wants/vigil-uplink.service" \
      "$system_unit_dir/vigil-uplink.service"
rmdir "$unit_dir/graphical-session.target.wants" "$system_unit_dir/timers.target.wants" \
  "$system_unit_dir/multi-user.target.wants" \
  2>/dev/null || true
rm -rf "$prefix"
if [ "$keep_config" -eq 0 ]; then
  rm -f "$sysconfdir/agent.toml" "$sysconfdir/enrol.toml" "$sysconfdir/ca.crt"
  rmdir "$sysconfdir" 2>/dev/null || echo "left $sysconfdir (it holds other files)"
fi
if [ "$purge" -eq 1 ]; then
  if [ -d "$statedir" ]; then rm -rf "$statedir"; echo "removed $statedir"; fi
  for d in "$root"/home/*/.local/share/vigil-agent "$root"/root/.local/share/vigil-agent; do
    if [ -d "$d" ]; then rm -rf "$d"; echo "removed $d"; fi
  done
fi
echo "uninstalled. Running agents stop at each user's next logout."
