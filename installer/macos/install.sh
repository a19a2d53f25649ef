#!/bin/bash
# Install the Vigil agent for every user of this Mac. UNTESTED ON A REAL MAC (see README.md);
# on Linux the tests run it with --root to check the files it writes. Written for macOS's
# /bin/bash 3.2 (no bash 4 features).
#
#   sudo installer/macos/install.sh --collector vigil.school.uk:7443 --token-file token.txt \
#        --ca ca.crt --app "Vigil Agent.app" [--wheel vigil-0.1.0-py3-none-any.whl] \
#        [--python /usr/local/bin/python3.12]
#
# Installs:
#   /Library/Vigil/venv, /Library/Vigil/vigil_session.py
#   /Library/Vigil/Vigil Agent.app   (the signed launcher the privacy profile names; it runs the
#                                     agent in its own process: installer/macos/launcher)
#   /Library/Application Support/Vigil/agent.toml, ca.crt   (users: read)
#   /Library/Application Support/Vigil/enrol.toml           (the token: root only)
#   /Library/Application Support/Vigil/device/              (the identity, enrolled ONCE here)
#   /Library/Application Support/Vigil/sessions/<user>/     (each user's spool, outside $HOME)
#   /Library/LaunchAgents/org.vigil.agent.plist    (one agent per user GUI session)
#   /Library/LaunchDaemons/org.vigil.enrol.plist   (retries enrolment until it succeeds)
#   /Library/LaunchDaemons/org.vigil.uplink.plist  (the uplink relay, root: the device key's only
#                                                   reader; agents reach it on /var/run/vigil)
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: install.sh --collector HOST:PORT (--token TOKEN | --token-file FILE) --ca FILE [options]

  --enroll HOST:PORT   enrolment port (default: collector host, port 7444)
  --app DIR            the signed "Vigil Agent.app" built by installer/macos/launcher/build.sh
                       (required: the privacy profile grants permissions to it, not to Python)
  --wheel FILE         install this vigil wheel (default: vigil from the package index)
  --python PY          Python 3.11+ (default: python3 from python.org, /usr/local/bin/python3)
  --root DIR           write everything under DIR and skip plutil/launchctl (tests, packaging)
  --no-enrol           do not enrol now (the org.vigil.enrol daemon will)
USAGE
}
die() { echo "install.sh: $*" >&2; exit 2; }

collector="" enroll="" token="" ca="" wheel="" bundle="" python="/usr/local/bin/python3" root=""
enrol_now=1
while [ $# -gt 0 ]; do
  case "$1" in
    --collector) collector="${2:?--collector needs HOST:PORT}"; shift 2 ;;
    --enroll) enroll="${2:?--enroll needs HOST:PORT}"; shift 2 ;;
    --token) token="${2:?--token needs a value}"; shift 2 ;;
    --token-file) [ -f "${2:-}" ] || die "--token-file: no such file: ${2:-}"
                  token="$(tr -d '[:space:]' <"$2")"; shift 2 ;;
    --ca) ca="${2:?--ca needs a file}"; shift 2 ;;
    --wheel) wheel="${2:?--wheel needs a file}"; shift 2 ;;
    --app) bundle="${2:?--app needs the Vigil Agent.app folder}"; shift 2 ;;
    --python) python="${2:?--python needs an interpreter}"; shift 2 ;;
    --root) root="${2:?--root needs a directory}"; shift 2 ;;
    --no-enrol) enrol_now=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
done

case "$collector" in *:*) ;; *) die "--collector HOST:PORT is required (the collector's stream port)" ;; esac
[ -n "$token" ] || die "--token (or --token-file) is required: run 'vigil-collector token create' on the collector"
case "$token" in *[!A-Za-z0-9._~+/=:-]*) die "--token: unexpected characters; paste the token exactly as printed" ;; esac
[ -f "$ca" ] || die "--ca FILE is required and must exist: copy ca.crt from the collector's data dir"
grep -q "BEGIN CERTIFICATE" "$ca" || die "--ca: $ca is not a PEM certificate"
[ -n "$enroll" ] || enroll="${collector%:*}:7444"
[ -n "$bundle" ] || die "--app \"Vigil Agent.app\" is required: build and sign it with installer/macos/launcher/build.sh (the privacy profile names it; Python itself gets no permissions)"
[ -x "$bundle/Contents/MacOS/vigil-agent" ] || die "--app: $bundle/Contents/MacOS/vigil-agent is missing: pass the .app folder build.sh made"
if [ -n "$wheel" ]; then
  [ -f "$wheel" ] || die "--wheel: no such file: $wheel"
  wheel="$(cd "$(dirname "$wheel")" && pwd)/$(basename "$wheel")"
fi
if [ -n "$root" ]; then
  mkdir -p "$root"; root="$(cd "$root" && pwd)"
elif [ "$(id -u)" -ne 0 ]; then
  die "run as root (sudo), or pass --root DIR"
fi
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
  || die "$python is not Python 3.11+: install Python from python.org for all users, or pass --python"

here="$(cd "$(dirname "$0")" && pwd)"
app="$root/Library/Vigil"
conf="$root/Library/Application Support/Vigil"
agents="$root/Library/LaunchAgents"
daemons="$root/Library/LaunchDaemons"
plist="$agents/org.vigil.agent.plist"
daemon="$daemons/org.vigil.enrol.plist"
uplink="$daemons/org.vigil.uplink.plist"
logs="$root/Library/Logs/Vigil"

echo "==> virtualenv in $app/venv"
mkdir -p "$app" "$conf" "$agents" "$daemons"
[ -x "$app/venv/bin/python3" ] || "$python" -m venv "$app/venv"
"$app/venv/bin/python3" -m pip install -q --upgrade pip >/dev/null
if [ -n "$wheel" ]; then
  "$app/venv/bin/python3" -m pip install -q "${wheel}[agent]"
else
  "$app/venv/bin/python3" -m pip install -q "vigil[agent]"
fi
install -m 0644 "$here/../vigil_session.py" "$app/vigil_session.py"
echo "==> $app/Vigil Agent.app (the signed launcher)"
rm -rf "$app/Vigil Agent.app"
if command -v ditto >/dev/null 2>&1; then
  ditto "$bundle" "$app/Vigil Agent.app"   # keeps the signature and extended attributes
else
  cp -R "$bundle" "$app/Vigil Agent.app"
fi

echo "==> config in $conf"
install -m 0644 "$ca" "$conf/ca.crt"
cat >"$conf/agent.toml" <<TOML
# Vigil agent, written by installer/macos/install.sh. Keys: docs/configuration.md.
[agent]
collector = "$collector"
TOML
chmod 0644 "$conf/agent.toml"
# The token is for root only: the device enrols once; sessions never do.
( umask 077 && cat >"$conf/enrol.toml" <<TOML
# Vigil device enrolment (root only), written by installer/macos/install.sh.
[enroll]
server = "$enroll"
token = "$token"
ca = "/Library/Application Support/Vigil/ca.crt"
TOML
)
chmod 0600 "$conf/enrol.toml"
# device/: written by root, read by every session's agent. sessions/: each user creates their
# own 0700 folder; 1733 lets them create it but not list the others'.
install -d -m 0755 "$conf/device"
install -d -m 1733 "$conf/sessions"

echo "==> LaunchAgent $plist, LaunchDaemons $daemon, $uplink"
install -m 0644 "$here/org.vigil.agent.plist" "$plist"
install -m 0644 "$here/org.vigil.enrol.plist" "$daemon"
install -m 0644 "$here/org.vigil.uplink.plist" "$uplink"
install -d -m 0755 "$logs"
if [ "$enrol_now" -eq 1 ]; then
  echo "==> enrolling this device (once, for every user)"
  if "$app/venv/bin/python3" "$app/vigil_session.py" --enrol-device \
       --config "$conf/agent.toml" --device-dir "$conf/device"; then
    echo "enrolled: every user of this Mac shares the device identity"
  else
    echo "install.sh: warning: enrolment failed (collector unreachable?); org.vigil.enrol" \
         "retries every 5 minutes, and agents keep captures in their spool until then" >&2
  fi
fi
if [ -z "$root" ]; then
  chown root:wheel "$plist" "$daemon" "$uplink"
  # The key is root's alone (enrolment writes it 0600; the relay re-checks at every start).
  chown root:wheel "$conf/device"
  chown -R root:wheel "$app/Vigil Agent.app"  # a pupil must not swap the binary TCC trusts
  for f in "$plist" "$daemon" "$uplink"; do
    plutil -lint "$f" >/dev/null || die "plutil rejected $f"
  done
  launchctl bootstrap system "$daemon" 2>/dev/null || true
  launchctl bootstrap system "$uplink" 2>/dev/null || true
  # Start it now in the session of whoever is logged in at the console, if anyone.
  user="$(stat -f %Su /dev/console 2>/dev/null || true)"
  if [ -n "$user" ] && [ "$user" != "root" ] && [ "$user" != "loginwindow" ]; then
    launchctl bootstrap "gui/$(id -u "$user")" "$plist" 2>/dev/null || true
  fi
fi
echo "installed: the agent starts at each user's next login. Grant its privacy permissions"
echo "with the PPPC profile (vigil-pppc.mobileconfig) from your MDM; see README.md."
