#!/bin/bash
# Remove the Vigil agent installed by install.sh. UNTESTED ON A REAL MAC (see README.md).
#   sudo installer/macos/uninstall.sh [--root DIR] [--keep-config] [--purge-user-data]
# The device identity and the sessions' unsent captures (/Library/Application Support/Vigil/
# device, sessions) are left in place unless --purge-user-data.
set -euo pipefail
die() { echo "uninstall.sh: $*" >&2; exit 2; }

root="" keep_config=0 purge=0
while [ $# -gt 0 ]; do
  case "$1" in
    --root) root="${2:?--root needs a directory}"; shift 2 ;;
    --keep-config) keep_config=1; shift ;;
    --purge-user-data) purge=1; shift ;;
    -h|--help) echo "usage: uninstall.sh [--root DIR] [--keep-config] [--purge-user-data]"; exit 0 ;;
    *) die "unknown option: $1" ;;
  esac
done
[ -n "$root" ] || [ "$(id -u)" -eq 0 ] || die "run as root (sudo), or pass --root DIR"

plist="$root/Library/LaunchAgents/org.vigil.agent.plist"
daemon="$root/Library/LaunchDaemons/org.vigil.enrol.plist"
uplink="$root/Library/LaunchDaemons/org.vigil.uplink.plist"
conf="$root/Library/Application Support/Vigil"
if [ -z "$root" ] && [ -f "$daemon" ]; then
  launchctl bootout system/org.vigil.enrol 2>/dev/null || true
fi
if [ -z "$root" ] && [ -f "$uplink" ]; then
  launchctl bootout system/org.vigil.uplink 2>/dev/null || true
fi
if [ -z "$root" ] && [ -f "$plist" ]; then
  # Stop the agent in every GUI session that has it loaded.
  for uid in $(ps -axo uid=,comm= | awk '/loginwindow/ {print $1}' | sort -u); do
    launchctl bootout "gui/$uid/org.vigil.agent" 2>/dev/null || true
  done
fi
rm -f "$plist" "$daemon" "$uplink"
rm -rf "$root/Library/Vigil" "$root/Library/Logs/Vigil"
if [ "$keep_config" -eq 0 ]; then
  rm -f "$conf/agent.toml" "$conf/enrol.toml" "$conf/ca.crt"
fi
if [ "$purge" -eq 1 ]; then
  rm -rf "$conf/device" "$conf/sessions"
  rmdir "$conf" 2>/dev/null || true
fi
echo "uninstalled."
