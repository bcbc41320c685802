#!/bin/bash
# Runs inside the systemd VM (run-systemd-test.sh) as a oneshot unit after boot: checks the
# shipped puppetcam system unit under the real systemd, prints one PUPPETCAM-VM: line per check
# with its time, then PUPPETCAM-VM: PASS or FAIL and powers the VM off.
set -u
. /usr/local/lib/puppetcam-vmtest/guest-lib.sh   # T0, fails, say, check, wait_for
finish() {
    systemctl status --no-pager -n 30 puppetcam.service >/dev/console 2>&1
    journalctl -b --no-pager -u puppetcam.service | tail -40 >/dev/console 2>&1
    if [ ${#fails[@]} -eq 0 ]; then echo "PUPPETCAM-VM: PASS" >/dev/console
    else echo "PUPPETCAM-VM: FAIL ${fails[*]}" >/dev/console; fi
    systemctl poweroff --force --force
}
trap finish EXIT

mainpid() { systemctl show -p MainPID --value puppetcam.service; }
nrestarts() { systemctl show -p NRestarts --value puppetcam.service; }
active() { [ "$(systemctl show -p ActiveState --value puppetcam.service)" = active ] && [ "$(systemctl show -p SubState --value puppetcam.service)" = running ]; }
status_json() { curl -fsS --max-time 5 http://127.0.0.1:8765/status.json; }

# 0. v4l2loopback came up through the shipped modprobe.d/modules-load.d files.
check "v4l2loopback loaded at boot (/dev/video10, card puppetcam)" \
    wait_for 30 sh -c 'grep -q puppetcam /sys/class/video4linux/video10/name 2>/dev/null'

# 1. Type=notify: the unit is "active (running)" only after READY=1, which waits for the first
#    source frame and the loaded avatar.
check "unit reaches READY (active/running)" wait_for 240 active
ready_ms() { # process start -> READY (active), from systemd's own timestamps
    local a s
    a=$(systemctl show -p ActiveEnterTimestampMonotonic --value puppetcam.service)
    s=$(systemctl show -p ExecMainStartTimestampMonotonic --value puppetcam.service)
    echo $(( (a - s) / 1000 ))
}
say "READY $(ready_ms) ms after the process started; status: $(systemctl show -p StatusText --value puppetcam.service)"
check "/status.json says ready (source + avatar)" sh -c "status_json() { curl -fsS --max-time 5 http://127.0.0.1:8765/status.json; }; status_json | grep -q '\"ready\":{\"avatar\":true,\"ready\":true,\"source\":true}'"
check "/health is 200" curl -fsS --max-time 5 -o /dev/null http://127.0.0.1:8765/health

# 2. A reader on the loopback device gets frames.
check "a reader gets 10 frames from /dev/video10" sh -c \
    'timeout 30 v4l2-ctl -d /dev/video10 --stream-mmap --stream-count=10 --stream-to=/tmp/frames.raw >/dev/null 2>&1 && [ "$(stat -c %s /tmp/frames.raw)" -ge $((320 * 240 * 2 * 10)) ]'

# 6. Unprivileged: the puppetcam user, supplementary group video only, no capabilities.
pid=$(mainpid)
check "runs as user puppetcam" sh -c "[ \"\$(ps -o user= -p $pid)\" = puppetcam ]"
video_gid=$(getent group video | cut -d: -f3)
own_gid=$(id -g puppetcam)
check "groups: own group + video only" sh -c "grep -E '^Groups:' /proc/$pid/status | tr -s ' \t' ' ' | grep -qxE 'Groups: ?($video_gid $own_gid|$own_gid $video_gid|$video_gid) ?'"
check "no capabilities" sh -c "grep -qE '^CapEff:[[:space:]]+0+$' /proc/$pid/status"
check "not root" sh -c "! grep -qE '^Uid:[[:space:]]+0[[:space:]]' /proc/$pid/status"

# 5. SIGHUP with a changed config is applied, the process stays.
cp /etc/puppetcam/puppetcam.toml /tmp/puppetcam.toml.orig
printf '\n[retarget]\nenabled = false\n' >>/etc/puppetcam/puppetcam.toml
t=$(date +%s)
systemctl reload puppetcam.service
check "SIGHUP applies the new config (retarget off)" wait_for 60 sh -c "curl -fsS --max-time 5 http://127.0.0.1:8765/status.json | grep -q '\"retarget_state\":\"off'"
check "reload kept the process" sh -c "[ \"\$(systemctl show -p MainPID --value puppetcam.service)\" = $pid ]"
say "reload applied in $(( $(date +%s) - t )) s; status: $(systemctl show -p StatusText --value puppetcam.service)"

# 3. SIGSTOP: no more watchdog pings, systemd (WatchdogSec=10) kills and restarts the daemon.
r0=$(nrestarts)
t=$(date +%s)
kill -STOP "$pid"
check "SIGSTOP -> watchdog restart" wait_for 90 sh -c "[ \"\$(systemctl show -p NRestarts --value puppetcam.service)\" -gt $r0 ] && [ \"\$(systemctl show -p MainPID --value puppetcam.service)\" != $pid ]"
check "watchdog timeout in the journal" sh -c "journalctl -b --no-pager -u puppetcam.service | grep -qi 'watchdog timeout'"
check "active again after the watchdog restart" wait_for 240 active
say "watchdog restart took $(( $(date +%s) - t )) s (READY $(ready_ms) ms after the new process started)"

# 4. A crash: Restart=on-failure. SIGABRT, not a sent SIGSEGV: Rust's stack-overflow handler
#    swallows a SIGSEGV that is not a real fault.
pid=$(mainpid)
r0=$(nrestarts)
t=$(date +%s)
kill -ABRT "$pid"
check "crash -> Restart=on-failure" wait_for 60 sh -c "[ \"\$(systemctl show -p NRestarts --value puppetcam.service)\" -gt $r0 ]"
check "active again after the crash" wait_for 240 active
say "crash restart took $(( $(date +%s) - t )) s"

# Clean stop: SIGTERM drains and exits 0 (not a failure).
check "systemctl stop is clean" sh -c 'systemctl stop puppetcam.service && [ "$(systemctl show -p Result --value puppetcam.service)" = success ]'
