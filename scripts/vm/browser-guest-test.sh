#!/bin/bash
# Runs inside the browser VM (run-browser-test.sh) as a oneshot unit after boot: real headless
# browsers (chromium, firefox-esr) open the local probe page, find the camera labelled
# puppetcam and draw its frames, while the shipped puppetcam system unit writes /dev/video10:
# browser opened after and before the daemon, a SIGHUP that changes the output size and full
# restarts while the browser holds the stream, YUYV and I420. Prints one PUPPETCAM-VM: line per
# check with its time, each probe's findings as PUPPETCAM-VM-RESULT lines (JSON), then
# PUPPETCAM-VM: PASS or FAIL and powers the VM off.
#
# Under TCG the emulated CPU gives the browser a few frames a second at best: frames and their
# content are asserted, rates only reported.
set -u
. /usr/local/lib/puppetcam-vmtest/guest-lib.sh   # T0, fails, say, check, need, wait_for, unit, active, ready, sj
OUT=/dev/video10
CONF=/etc/puppetcam/puppetcam.toml
SHARE=/usr/local/share/puppetcam-vmtest
W=/tmp/vmtest
SHOTS=$W/shots
mkdir -p "$W"
chmod 0755 "$W"
# file://: a secure context for getUserMedia in both browsers, and no network service to start.
URL=file://$SHARE/web/index.html
# Seconds of stream each probe watches: the warp avatar makes about one new frame a second
# under TCG, so this sees several.
SAMPLE_S=6
# The browser's mean colour may differ from the device's frame by the frames in between and the
# browser's scaling; a wrong colour conversion (full range, swapped chroma) is off by 20+.
MEAN_TOL=12

finish() {
    browser_stop
    say "journal of puppetcam.service (last 25 lines):"
    journal_since "$T0" | tail -25 >/dev/console 2>&1
    for f in "$W"/probe-*.log; do
        [ -f "$f" ] || continue
        say "$(basename "$f") (last 15 lines):"
        grep -vE "^\[[0-9.]+\]\[(INFO)\]: (Waiting|Done waiting)" "$f" | tail -40 >/dev/console 2>&1
    done
    export_file results.jsonl "$W/results.jsonl"
    if [ ${#fails[@]} -eq 0 ]; then echo "PUPPETCAM-VM: PASS" >/dev/console
    else echo "PUPPETCAM-VM: FAIL ${fails[*]}" >/dev/console; fi
    systemctl poweroff --force --force
}
trap finish EXIT

# A file out to the host through the console (the VM has neither disk nor network to it):
# base64 in numbered lines that run-browser-test.sh puts back together.
export_file() { # name path
    [ -s "$2" ] || return 0
    local n i=0
    base64 -w 3000 "$2" >"$W/b64"
    n=$(wc -l <"$W/b64")
    while IFS= read -r l; do
        echo "PUPPETCAM-FILE $1 $i/$n $l" >/dev/console
        i=$((i + 1))
    done <"$W/b64"
}

# ---- the daemon's config ------------------------------------------------------------------------
# Sets `key = value` in the [output] section (the [source] section has keys of the same names).
output_set() { # key value
    sed -i "/^\[output\]/,/^\[/ s/^$1 = .*/$1 = $2/" "$CONF"
}
output_is() { # format width height: the config file says so
    output_set format "\"$1\""; output_set width "$2"; output_set height "$3"
}
# (Re)starts the unit with the config as it is and waits for READY.
daemon_restart() {
    systemctl reset-failed puppetcam.service 2>/dev/null
    systemctl restart --no-block puppetcam.service
    ready 240
}
sink_desc() { sj .sink_state; }
kept_status() { sink_desc | grep -q 'kept by a consumer; configured 640x480 yuyv'; }
# Which processes have the device open or its buffers mapped: v4l2loopback keeps the format
# and its buffers while anyone does.
holders() {
    local p out=
    for p in /proc/[0-9]*; do
        if ls -l "$p/fd" 2>/dev/null | grep -q "$OUT\$" || grep -q "$OUT" "$p/maps" 2>/dev/null; then
            out+=" $(cat "$p/comm" 2>/dev/null)[${p#/proc/}]$(grep -q "$OUT" "$p/maps" 2>/dev/null && echo '(mapped)')"
        fi
    done
    echo "holders of $OUT:${out:- none}"
}
# The browser (the test user's processes) has the device neither open nor mapped. Only those
# processes are looked at: reading every process's maps took 25 s on the emulated CPU.
browser_off_device() {
    local p
    for p in $(pgrep -u tester); do
        if ls -l "/proc/$p/fd" 2>/dev/null | grep -q " $OUT\$" || grep -q "$OUT" "/proc/$p/maps" 2>/dev/null; then return 1; fi
    done
}
# Stops the page's stream and waits (30 s at most) until the browser has closed the device:
# it does so after track.stop() returns. A second reader while a browser still streams
# (v4l2-ctl's REQBUFS resets the buffers of every opener in v4l2loopback 0.12.7) ended
# Chromium's track, and once left Chromium's next getUserMedia without a frame.
stop_stream() {
    local t=$(date +%s)
    pq call stop
    if wait_for 30 browser_off_device; then
        say "$BROWSER $SCENARIO: the browser let go of $OUT in $(($(date +%s) - t)) s"
    else
        say "$BROWSER $SCENARIO: the browser still holds $OUT 30 s after stopping its stream; $(holders)"
    fi
}
# What the daemon logged since epoch second $1 about its output, restarts and reloads.
daemon_log() { journal_since "$1" | grep -E 'v4l2|output|reload|kept|needs a restart|ERROR|WARN|Started|Stopped' | tail -8 >/dev/console 2>&1; }

# ---- the browser, held open by puppetcam-browser-probe ------------------------------------------
# STREAMED: this browser process has opened a stream (see open_and_watch).
BROWSER= BROWSER_VERSION= WEDGED= STREAMED=
browser_start() { # chromium | firefox
    local first
    BROWSER=$1
    WEDGED= STREAMED=
    # setpriv, not runuser: no PAM session, which would wait for logind (masked here).
    coproc PROBE { exec setpriv --reuid=tester --regid=tester --init-groups env HOME=/home/tester USER=tester \
        puppetcam-browser-probe "$BROWSER" "$URL" 2>>"$W/probe-$BROWSER.log"; }
    # The emulated CPU, shared with the daemon: a browser can take minutes to start.
    if ! IFS= read -r -t 1000 first <&"${PROBE[0]}"; then first='{"ok":false,"error":"no answer from the browser in 1000 s"}'; fi
    echo "$first" >"$W/last"
    BROWSER_VERSION=$(jq -r '.browser // empty' "$W/last")
    say "$BROWSER: $first; $(mem)"
    jq -e .ok "$W/last" >/dev/null
}
browser_stop() {
    [ -n "${PROBE_PID:-}" ] || return 0
    local line pid=$PROBE_PID
    if [ -n "${PROBE[1]:-}" ]; then
        echo quit >&"${PROBE[1]}" 2>/dev/null
        IFS= read -r -t 60 line <&"${PROBE[0]}" 2>/dev/null
    fi
    kill "$pid" 2>/dev/null
    sleep 1
    kill -9 "$pid" 2>/dev/null
    # Whatever the driver left behind (a browser that did not quit): the test user's processes.
    pkill -9 -u tester 2>/dev/null
    wait "$pid" 2>/dev/null
    PROBE_PID=
}
# One command to the page (see puppetcam-browser-probe); the answer, one JSON line, goes to
# $W/last and, tagged with the scenario, to results.jsonl and the console.
SCENARIO=
FORMAT=yuyv
pq() {
    local line
    if [ -z "${PROBE[1]:-}" ]; then
        line='{"ok":false,"error":"the browser driver is gone"}'
    elif [ -n "$WEDGED" ]; then
        # Its late answer would be read as the answer to this command: not asked again.
        line='{"ok":false,"error":"the browser stopped answering earlier"}'
    elif ! echo "$*" >&"${PROBE[1]}" 2>/dev/null; then
        line='{"ok":false,"error":"the browser driver is gone"}'
    elif ! IFS= read -r -t 300 line <&"${PROBE[0]}"; then
        line='{"ok":false,"error":"no answer from the browser in 300 s"}'
        WEDGED=1
        say "$BROWSER stopped answering ($*); its log:"
        grep -vE 'dbus|DBus|font_unique' "$W/probe-$BROWSER.log" | tail -15 >/dev/console 2>&1
    fi
    echo "$line" >"$W/last"
    jq -c --arg b "$BROWSER_VERSION" --arg s "$SCENARIO" --arg f "$FORMAT" --arg c "$*" \
        '{browser: $b, scenario: $s, format: $f, command: $c} + .' "$W/last" >>"$W/results.jsonl" 2>/dev/null \
        || echo "{\"browser\":\"$BROWSER_VERSION\",\"scenario\":\"$SCENARIO\",\"unparsed\":true}" >>"$W/results.jsonl"
    say "RESULT $BROWSER $SCENARIO $*: $(jq -c 'del(.cameras)' "$W/last" 2>/dev/null || cat "$W/last")"
}
last() { jq -e "$1" "$W/last" >/dev/null 2>&1; }
# A screenshot of the browser's view, sent to the host at once when it keeps them.
shot() {
    pq screenshot "$SHOTS/$1"
    [ -f "$SHARE/export-screenshots" ] && export_file "$1" "$SHOTS/$1"
}

# The camera is in the page's list.
sees_camera() { pq call find puppetcam; last '.cam != null and (.cam.label | test("puppetcam"))'; }
no_camera() { pq call find puppetcam; last '.cams != null and .cam == null'; }
# Opens the camera at $1 x $2; the answer must name it.
opens() { pq call open puppetcam "$1" "$2"; last '.ok and (.label | test("puppetcam"))'; }
# Watches the open stream: frames drawn, live track, a real picture (not black, not flat), and
# the face moving (some consecutive frames differ).
sample() { # [seconds]
    pq call sample "${1:-$SAMPLE_S}"
    say "$BROWSER $SCENARIO: $(mem)"
    if last '.trackState == "ended"'; then
        say "the browser ended the track $(jq -r .endedSAgo "$W/last") s ago; its log:"
        grep -vE 'dbus|DBus|font_unique' "$W/probe-$BROWSER.log" | tail -8 >/dev/console 2>&1
    fi
}
frames_drawn() { last '.ok and .samples >= 3 and .trackState == "live"'; }
picture() { last '.ok and (.mean | add / 3) > 30 and .spread > 15'; }
moving() { last '.ok and .changed >= 2'; }
flows() { frames_drawn && moving; }
size_is() { last ".ok and .videoSize == [$1, $2]"; }
# A frame read from the device (same conversion as the sink's, decoded independently), the
# reference for the canvas's mean colour: the browser decodes the format and range right. Read
# with read() (no buffer negotiation) once the browser has let go of the device and before it
# opens the stream again: a second reader that streams and closes (v4l2-ctl) while Chromium holds
# the stream ended Chromium's track, and one between Chromium's stop and its next getUserMedia
# left that getUserMedia without an answer (v4l2loopback 0.12.7; both seen in this test).
REF=
reference_frame() {
    local p i=0
    REF=
    # In the background with a deadline: once (after a restart at another size) this read hung
    # the whole test.
    puppetcam-browser-probe frame-mean "$OUT" >"$W/ref" 2>>"$W/frame-mean.err" &
    p=$!
    while kill -0 "$p" 2>/dev/null && [ $i -lt 120 ]; do sleep 0.5; i=$((i + 1)); done
    if kill -0 "$p" 2>/dev/null; then
        say "frame-mean: no frame from $OUT in 60 s; daemon: $(sj '[.stages[] | "\(.name) \(.frames)"] | join(", ")'), sink $(sink_desc); $(holders)"
        # Where the reader waits in the kernel (its stack on the console).
        sysrq_dump w
        pkill -9 -P "$p" 2>/dev/null
        kill -9 "$p" 2>/dev/null
        return
    fi
    wait "$p" && REF=$(cat "$W/ref") || say "frame-mean failed: $(tail -2 "$W/frame-mean.err")"
}
colour_matches() {
    [ -n "$REF" ] || return 1
    say "device frame: $REF; canvas mean $(jq -c .mean "$W/last")"
    jq -n -e --argjson a "$(jq -c .mean "$W/last")" --argjson b "$(echo "$REF" | jq -c .mean)" --argjson t "$MEAN_TOL" \
        '[range(3)] | all(. as $i | (($a[$i] - $b[$i]) | fabs) <= $t)' >/dev/null
}
# The track in $W/last ended after epoch second $1 (the restart), not before it.
ended_during_restart() {
    local ago
    ago=$(jq -r '.endedSAgo // empty | floor' "$W/last")
    [ -n "$ago" ] && [ $(($(date +%s) - ago)) -ge $(($1 - 2)) ]
}
# One open at w x h and a sample, with its checks. $3: "exact" when the device has that size.
open_and_watch() { # w h exact|scaled
    local tag="$BROWSER $FORMAT $SCENARIO ${1}x$2"
    if [ "$3" = exact ]; then
        stop_stream
        # Chromium in one process (--single-process, how this test runs it under TCG) never
        # answered a getUserMedia that came more than a few seconds after its previous stream
        # stopped (three runs in a row, at the first such reopen; a reopen at once, as open()
        # does from 1280x720 to 640x480, always worked). Likely its in-process video capture
        # service, shut down when idle, does not come back in that mode; not a puppetcam or
        # desktop-Chrome behaviour (see docs/virtual-camera.md). A fresh browser opens the stream.
        if [ "$BROWSER" = chromium ] && [ -n "$STREAMED" ]; then
            browser_stop
            need "$tag: Chromium starts again for a fresh stream" browser_start chromium || return 1
        fi
        reference_frame
    fi
    need "$tag: getUserMedia opens the puppetcam camera" opens "$1" "$2" || return 1
    STREAMED=1
    sample
    check "$tag: frames drawn to the canvas (live track)" frames_drawn
    check "$tag: a picture, not black or flat" picture
    check "$tag: consecutive frames differ (the face moves)" moving
    if [ "$3" = exact ]; then
        check "$tag: the video is ${1}x$2" size_is "$1" "$2"
        check "$tag: mean colour matches the device's frame (within $MEAN_TOL)" colour_matches
    fi
}

# ---- one browser through every scenario -----------------------------------------------------------
run_browser() { # chromium | firefox
    local b=$1 pid
    FORMAT=yuyv
    output_is yuyv 1280 720
    systemctl stop puppetcam.service
    systemctl reset-failed puppetcam.service 2>/dev/null

    # 1. The browser opens before puppetcam: with exclusive_caps=1 the idle node is an output,
    #    not a camera. Then the daemon starts: does the open page see the camera after a new
    #    enumerateDevices(), after a reload? (Reported; docs/virtual-camera.md says what to do.)
    SCENARIO=before
    need "$b: starts with the page" browser_start "$b" || return
    check "$b before: no puppetcam camera while the daemon is stopped" no_camera
    need "$b before: daemon reaches READY" daemon_restart || return
    if sees_camera; then
        say "$b before: seen after a new enumerateDevices(), without a reload"
    else
        say "$b before: not seen after a new enumerateDevices(); reloading"
        pq reload
        if sees_camera; then say "$b before: seen after a reload"; else say "$b before: not seen after a reload either"; fi
    fi
    browser_stop

    # 2. The browser opens after puppetcam: listed at once; 1280x720 (the device's size) and
    #    640x480 (the browser scales or crops, or gives the device's size).
    SCENARIO=after
    need "$b: starts with the page (daemon running)" browser_start "$b" || return
    need "$b after: the camera is listed at once" sees_camera || return
    open_and_watch 1280 720 exact
    shot "$b-yuyv-1280x720.png"
    check "$b after: screenshot taken" last '.ok and .bytes > 10000'
    open_and_watch 640 480 scaled
    say "$b after 640x480: negotiated $(jq -c '{videoSize, settings: (.settings | {width, height, frameRate})}' "$W/last")"

    # 3. SIGHUP that changes the output size while the browser holds the stream: documented as
    #    not applied (needs a restart); the stream goes on at the old size, same process.
    SCENARIO=sighup
    open_and_watch 1280 720 exact
    pid=$(unit MainPID)
    output_is yuyv 640 480
    t=$(date +%s)
    systemctl reload puppetcam.service
    # The outcome goes to the journal and systemd's status line.
    check "$b sighup: the reload says the size needs a restart" wait_for 60 sh -c "journalctl -b --no-pager -u puppetcam.service --since @$t | grep -q 'needs a restart: output 640x480'"
    say "$b sighup: status: $(unit StatusText)"
    check "$b sighup: same process" sh -c "[ \"\$(systemctl show -p MainPID --value puppetcam.service)\" = $pid ]"
    sample
    check "$b sighup: the held stream goes on (frames, moving)" flows
    check "$b sighup: still 1280x720" size_is 1280 720
    daemon_log "$t"

    # 4. Full restart, same size, while the browser holds the stream: the same stream (no new
    #    getUserMedia) shows the new process's frames.
    SCENARIO=restart
    output_is yuyv 1280 720
    last '.trackState == "live"' || open_and_watch 1280 720 exact
    t=$(date +%s)
    check "$b restart: daemon READY again with the stream held" daemon_restart
    # A new process starts from a provisional neutral face and moves little at first (seen: 1
    # changed sample in the first 6 s): a longer window.
    sample $((2 * SAMPLE_S))
    if [ "$b" = chromium ] && last '.trackState == "ended"' && ended_during_restart "$t"; then
        # Chromium ends a track that gets no frame for a while (about 20 s into a 50 s restart
        # under TCG, where stop to the new process's first frame takes 30-50 s; seconds on a
        # real machine). That is the documented outcome (docs/virtual-camera.md):
        # the page opens the camera again and sees the new process.
        say "$b restart: Chromium ended the held track during the restart ($(jq -r .endedSAgo "$W/last") s before the sample; restart began $(($(date +%s) - t)) s before); opening again"
        open_and_watch 1280 720 exact
    else
        check "$b restart: the held stream recovers (frames, moving)" flows
        check "$b restart: still 1280x720" size_is 1280 720
    fi
    daemon_log "$t"

    # 5. Full restart with another size while the browser holds the stream: v4l2loopback keeps
    #    the held format; the sink writes it (scaled) instead of failing, and says so.
    SCENARIO=restart-size
    last '.trackState == "live"' || open_and_watch 1280 720 exact
    output_is yuyv 640 480
    t=$(date +%s)
    check "$b restart-size: daemon READY with the stream held" daemon_restart
    say "$b restart-size: sink $(sink_desc)"
    check "$b restart-size: status says the format is kept by a consumer" kept_status
    sample $((2 * SAMPLE_S))
    check "$b restart-size: the held stream recovers (frames, moving)" flows
    check "$b restart-size: still 1280x720" size_is 1280 720
    daemon_log "$t"
    # With the stream closed, a restart applies the configured size.
    stop_stream
    say "$b restart-size: $(mem)"
    check "$b restart-size: READY at 640x480 once the browser let go" daemon_restart
    check "$b restart-size: the device is 640x480 now" sh -c "v4l2-ctl -d $OUT --get-fmt-video | grep -q 'Width/Height *: *640/480'"
    say "$b restart-size: daemon stages $(sj '[.stages[] | "\(.name) \(.frames)"] | join(", ")'); sink $(sink_desc); $(holders)"
    open_and_watch 640 480 exact

    # 6. I420 (V4L2 YU12), 1280x720.
    stop_stream
    # A browser that stopped answering above gets a fresh start, so I420 is still tested.
    if [ -n "$WEDGED" ]; then
        browser_stop
        need "$b: starts again with the page (for I420)" browser_start "$b" || return
    fi
    FORMAT=i420
    SCENARIO=i420
    output_is i420 1280 720
    check "$b i420: daemon READY in I420" daemon_restart
    check "$b i420: the device is YU12" sh -c "v4l2-ctl -d $OUT --get-fmt-video | grep -q YU12"
    open_and_watch 1280 720 exact
    shot "$b-i420-1280x720.png"
    browser_stop
}

say "v4l2loopback: $(cat /sys/class/video4linux/video10/name 2>/dev/null) (video10), exclusive_caps $(cat /sys/module/v4l2loopback/parameters/exclusive_caps 2>/dev/null)"
check "v4l2loopback made /dev/video10" wait_for 30 test -e "$OUT"
# The browsers run as a user in the video group, as a desktop user would.
useradd -m -G video tester
# The browser writes its screenshots as that user.
install -d -o tester "$SHOTS"
for b in $(cat "$SHARE/browsers"); do
    run_browser "$b"
done
systemctl start puppetcam.service
check "systemctl stop is clean" sh -c 'systemctl stop puppetcam.service && [ "$(systemctl show -p Result --value puppetcam.service)" = success ]'
