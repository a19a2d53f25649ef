#!/bin/bash
# Remove the Vigil agent installed by install.sh. UNTESTED ON A REAL MAC (see README.md).
#   sudo installer/macos/uninstall.sh [--root DIR] [--keep-config]
# Each user's agent data (~/Library/Application Support/vigil-agent) is left in place.
set -euo pipefail
die() { echo "uninstall.sh: $*" >&2; exit 2; }

root="" keep_config=0
while [ $# -gt 0 ]; do
  case "$1" in
    --root) root="${2:?--root needs a directory}"; shift 2 ;;
    --keep-config) keep_config=1; shift ;;
    -h|--help) echo "usage: uninstall.sh [--root DIR] [--keep-config]"; exit 0 ;;
    *) die "unknown option: $1" ;;
  esac
done
[ -n "$root" ] || [ "$(id -u)" -eq 0 ] || die "run as root (sudo), or pass --root DIR"

plist="$root/Library/LaunchAgents/org.vigil.agent.plist"
if [ -z "$root" ] && [ -f "$plist" ]; then
  # Stop the agent in every GUI session that has it loaded.
  for uid in $(ps -axo uid=,comm= | awk '/loginwindow/ {print $1}' | sort -u); do
    launchctl bootout "gui/$uid/org.vigil.agent" 2>/dev/null || true
  done
fi
rm -f "$plist"
rm -rf "$root/Library/Vigil"
if [ "$keep_config" -eq 0 ]; then
  rm -rf "$root/Library/Application Support/Vigil"
fi
echo "uninstalled."
