#!/usr/bin/env bash
# Build and sign "Vigil Agent.app": the launcher that embeds Python so macOS privacy permissions
# (TCC) are granted to org.vigil.agent, not to every Python script on the Mac.
#
# UNTESTED ON A REAL MAC. Run it ON A MAC, by whoever ships the agent (vendor or the school's MDM
# admin), after install.sh has created /Library/Vigil/venv: the launcher links against the Python
# that made that venv, so it must be rebuilt when that Python's minor version changes.
#
# Usage:
#   IDENTITY="Developer ID Application: Your School (TEAMID)" ./build.sh [output-dir]
# Environment:
#   IDENTITY       codesign identity (required), see: security find-identity -v -p codesigning
#   PYTHON_CONFIG  python3-config of the Python that made the venv (default: derived from the venv)
#   VIGIL_VENV     venv the launcher runs (default /Library/Vigil/venv)
#   VIGIL_SCRIPT   session script (default /Library/Vigil/vigil_session.py)
# Needs the Xcode command-line tools (cc, codesign). Release builds never define
# VIGIL_LAUNCHER_TESTING, so the VIGIL_LAUNCHER_VENV test override is compiled out.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/build}"
venv="${VIGIL_VENV:-/Library/Vigil/venv}"
script="${VIGIL_SCRIPT:-/Library/Vigil/vigil_session.py}"

die() { echo "build.sh: $*" >&2; exit 1; }

[ "$(uname -s)" = Darwin ] || die "run this on a Mac (needs cc and codesign from the Xcode tools)"
[ -n "${IDENTITY:-}" ] || die "no signing identity: set IDENTITY to a 'Developer ID Application: ... (TEAMID)' identity (list them with: security find-identity -v -p codesigning)"
command -v cc >/dev/null || die "cc not found: install the Xcode command-line tools (xcode-select --install)"
command -v codesign >/dev/null || die "codesign not found: install the Xcode command-line tools"
[ -f "$venv/pyvenv.cfg" ] || die "no virtualenv at $venv (run install.sh first, or set VIGIL_VENV)"

if [ -z "${PYTHON_CONFIG:-}" ]; then
  # The python that made the venv: pyvenv.cfg "home = <bindir>".
  home="$(sed -n 's/^home *= *//p' "$venv/pyvenv.cfg" | head -n 1)"
  ver="$("$venv/bin/python3" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  PYTHON_CONFIG="$home/python$ver-config"
  [ -x "$PYTHON_CONFIG" ] || PYTHON_CONFIG="$home/python3-config"
fi
[ -x "$PYTHON_CONFIG" ] || die "python3-config not found ($PYTHON_CONFIG): set PYTHON_CONFIG to the python3-config of the Python that made $venv"

app="$out/Vigil Agent.app"
echo "==> compiling the launcher with $PYTHON_CONFIG"
rm -rf "$app"
mkdir -p "$app/Contents/MacOS"
# shellcheck disable=SC2046  # the config flags must word-split
cc -Wall -Wextra -O2 $("$PYTHON_CONFIG" --cflags --embed) \
  -DVIGIL_VENV="\"$venv\"" -DVIGIL_SCRIPT="\"$script\"" \
  "$here/vigil_launcher.c" -o "$app/Contents/MacOS/vigil-agent" \
  $("$PYTHON_CONFIG" --ldflags --embed)
cp "$here/Info.plist" "$app/Contents/Info.plist"

echo "==> signing with: $IDENTITY"
codesign --force --options runtime --timestamp \
  --entitlements "$here/entitlements.plist" --sign "$IDENTITY" "$app"

echo "==> verifying"
codesign --verify --strict --verbose=2 "$app"
codesign -d --entitlements - "$app" >/dev/null

echo "==> built $app"
echo "Designated requirement (put it in the PPPC profile's CodeRequirement for org.vigil.agent):"
codesign -d -r- "$app" 2>&1 | sed -n 's/^designated => //p'
