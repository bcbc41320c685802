# Sourced by the guest tests of the systemd VM (systemd-guest-test.sh, webcam-guest-test.sh):
# the time base, PUPPETCAM-VM: report lines, checks that collect failures, and waiting.
# run-systemd-test.sh installs it as /usr/local/lib/puppetcam-vmtest/guest-lib.sh.
T0=$(date +%s)
fails=()
say() { echo "PUPPETCAM-VM-$(($(date +%s) - T0))s: $*" >/dev/console; }
check() { # name, command...
    local name=$1; shift
    if "$@"; then say "ok   $name"; else say "FAIL $name"; fails+=("$name"); fi
}
# Waits up to $1 s for `$2...` to succeed.
wait_for() {
    local t=$1; shift
    local end=$(($(date +%s) + t))
    until "$@"; do
        [ "$(date +%s)" -ge "$end" ] && return 1
        sleep 0.5
    done
}
