# Sourced by the guest tests of the systemd VM (systemd-guest-test.sh, webcam-guest-test.sh,
# browser-guest-test.sh): the time base, PUPPETCAM-VM: report lines, checks that collect
# failures, waiting, and the state of puppetcam.service.
# run-systemd-test.sh installs it as /usr/local/lib/puppetcam-vmtest/guest-lib.sh.
T0=$(date +%s)
fails=()
say() { echo "PUPPETCAM-VM-$(($(date +%s) - T0))s: $*" >/dev/console; }
check() { # name, command...
    local name=$1; shift
    if "$@"; then say "ok   $name"; else say "FAIL $name"; fails+=("$name"); fi
}
# A check that what follows cannot go on without: returns non-zero when it failed, so the
# caller can skip the rest (one FAIL is enough, and the VM's time is limited).
need() { local n=${#fails[@]}; check "$@"; [ ${#fails[@]} -eq "$n" ]; }
# Waits up to $1 s for `$2...` to succeed.
wait_for() {
    local t=$1; shift
    local end=$(($(date +%s) + t))
    until "$@"; do
        [ "$(date +%s)" -ge "$end" ] && return 1
        sleep 0.5
    done
}

# ---- puppetcam.service --------------------------------------------------------------------------
unit() { systemctl show -p "$1" --value puppetcam.service; }
# The daemon's journal since epoch second $1, without ONNX Runtime's graph-optimiser chatter.
journal_since() { journalctl -b --no-pager -o short-monotonic --since "@$1" -u puppetcam.service | grep -v 'ort::logging'; }
active() { [ "$(unit ActiveState)" = active ] && [ "$(unit SubState)" = running ]; }
# Waits up to $1 s for READY; gives up as soon as the process exits (a restart or `failed`) and
# shows why, so a broken start costs seconds, not the whole timeout.
ready() {
    local end=$(($(date +%s) + $1)) t state
    t=$(date +%s)
    until active; do
        state="$(unit ActiveState)/$(unit SubState)"
        case "$state" in
            failed/* | inactive/* | */auto-restart)
                say "puppetcam exited before READY ($state); its journal:"
                journal_since "$t" | grep -E 'ERROR|error:|exited|Failed' | head -6 >/dev/console 2>&1
                return 1 ;;
        esac
        [ "$(date +%s)" -ge "$end" ] && return 1
        sleep 0.5
    done
}
# One field of /status.json (jq filter), empty when the daemon does not answer (needs jq).
sj() { curl -fsS --max-time 5 http://127.0.0.1:8765/status.json 2>/dev/null | jq -r "$1" 2>/dev/null; }
