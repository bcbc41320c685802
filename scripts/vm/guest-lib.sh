# Sourced by the guest tests of the systemd VM (systemd-guest-test.sh, webcam-guest-test.sh,
# browser-guest-test.sh): the time base, PUPPETCAM-VM: report lines, checks that collect
# failures, waiting, and the state of puppetcam.service.
# run-systemd-test.sh installs it as /usr/local/lib/puppetcam-vmtest/guest-lib.sh.
T0=$(date +%s)
fails=()
# say() touches this file: the heartbeat below knows how long the test has been quiet.
SAY_STAMP=/run/puppetcam-vmtest.said
say() { echo "PUPPETCAM-VM-$(($(date +%s) - T0))s: $*" >/dev/console; : >"$SAY_STAMP"; }
: >"$SAY_STAMP"
# While the test reports nothing for a minute (a slow browser start, a stuck step), a heartbeat
# line goes to the console through the kernel log (/dev/kmsg, so it gets out even if a
# userspace write to the console blocks), with the load and the busiest processes: the host's
# silence watchdog (PUPPETCAM_VM_SILENCE_S) then stops only a guest that is really stuck, and a
# stall shows whether the emulated CPU was busy (starved) or idle (blocked). After 3 quiet
# minutes, once per stall, SysRq-w lists the tasks blocked in the kernel with their stacks.
# Memory left, and the biggest processes by resident size (MB): a guest short of memory
# thrashes without a kernel message.
mem() {
    echo "MemAvailable $(awk '/MemAvailable/ {print int($2 / 1024)}' /proc/meminfo) MB, largest$(ps -eo rss=,comm= --sort=-rss 2>/dev/null | head -3 | awk '{printf " %s %d", $2, $1 / 1024}')"
}
# SysRq $1 with its output on the console: the kernel prints the dumps at KERN_INFO, which the
# VM's loglevel=4 hides (only the "sysrq: Show ..." header got out), so the level is raised for it.
sysrq_dump() {
    local level
    level=$(cut -f1 /proc/sys/kernel/printk)
    echo 8 >/proc/sys/kernel/printk
    echo "$1" >/proc/sysrq-trigger
    sleep 2
    echo "$level" >/proc/sys/kernel/printk
}
heartbeat() {
    sysctl -q -w kernel.sysrq=1 kernel.hung_task_timeout_secs=60 kernel.hung_task_warnings=20 2>/dev/null
    (
        dumped=0
        while sleep 30; do
            quiet=$(($(date +%s) - $(stat -c %Y "$SAY_STAMP" 2>/dev/null || date +%s)))
            if [ "$quiet" -lt 60 ]; then dumped=0; continue; fi
            top=$(ps -eo pcpu=,stat=,comm= --sort=-pcpu 2>/dev/null | head -3 | tr -s ' ' | tr '\n' ';')
            echo "<3>puppetcam-vmtest: quiet ${quiet}s, load $(cut -d' ' -f1-3 /proc/loadavg), top:$top $(mem)" >/dev/kmsg
            if [ "$quiet" -ge 180 ] && [ $dumped = 0 ]; then sysrq_dump w; dumped=1; fi
        done
    ) </dev/null >/dev/null 2>&1 &
    HEARTBEAT_PID=$!
}
heartbeat
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
