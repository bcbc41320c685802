#!/usr/bin/env bash
# Real browsers pick puppetcam as their camera (issue 21): in the systemd VM of
# run-systemd-test.sh (qemu, Debian bookworm root, systemd as PID 1, v4l2loopback loaded at boot
# from the shipped modprobe files, the shipped system unit) with Debian's chromium
# and firefox-esr added, puppetcam runs as the service with a warp avatar (the public-domain
# astronaut of onnx/default_avatar.md, warp only) driven by the synthetic cartoon face, writing
# /dev/video10. Each browser, headless, opens a local page (scripts/vm/browser/probe.html) that
# finds the camera labelled `puppetcam` with enumerateDevices(), opens it with getUserMedia at
# 1280x720 and 640x480, draws the frames to a canvas and reports the label, negotiated size and
# rate, mean colour and whether consecutive frames differ. The guest
# (scripts/vm/browser-guest-test.sh) checks that in YUYV and I420, with the browser opened
# before and after the daemon, and across a SIGHUP and full restarts while the browser holds the
# stream. Exits 0 only if the guest prints PUPPETCAM-VM: PASS.
#
# Under TCG the emulated CPU is far too slow for real frame rates: the checks are about frames
# and their content; rates are reported, not asserted.
#
# Outputs (host): $PUPPETCAM_VM_CACHE/systemd/last-run-browser.log (console) and, when
# PUPPETCAM_BROWSER_OUT is set, that directory gets the results (results.jsonl, one line per
# probe) and the browsers' screenshots (PNG), carried out of the guest on the console as base64.
#
# Environment (besides run-systemd-test.sh's):
#   PUPPETCAM_VM_TIMEOUT     seconds the VM may run (default 2400: Chromium is started afresh for each
#                            new stream, and its part alone took 20 min on a loaded 2-core host, Firefox's
#                            12; every guest step has its own deadline, this one is the last resort)
#   PUPPETCAM_VM_SILENCE_S   stop a guest whose console is silent this long (default 300; the guest
#                            prints a heartbeat while it waits, see guest-lib.sh)
#   PUPPETCAM_BROWSER_OUT    directory for results.jsonl and screenshots (default: none kept)
#   PUPPETCAM_BROWSERS       which browsers to test, space-separated (default "chromium firefox")
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE=${PUPPETCAM_VM_CACHE:-$HOME/.cache/puppetcam-vm}
START=$(date +%s)

log() { printf '[browser-vm %3ss] %s\n' "$(($(date +%s) - START))" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

BROWSERS=${PUPPETCAM_BROWSERS:-chromium firefox}
for b in $BROWSERS; do
    case $b in chromium | firefox) ;; *) die "PUPPETCAM_BROWSERS: unknown browser '$b' (chromium, firefox)" ;; esac
done
command -v python3 >/dev/null || die "python3 is needed on the host (it extracts the portrait and the guest's results)"

# ---- the avatar: the bundled astronaut portrait as a warp-only avatar ------------------------
# Warp only: the refiner costs seconds a frame on the emulated CPU, and this test is about the
# camera path. The portrait is taken from onnx/default_avatar.pcav (public domain, so the
# screenshot may be committed); the avatar is made with the binary under test and cached.
if [ -z "${PUPPETCAM_BIN:-}" ]; then
    log "cargo build"
    (cd "$ROOT" && cargo build --quiet --bin puppetcam) || die "cargo build failed"
    PUPPETCAM_BIN=$ROOT/target/debug/puppetcam
fi
[ -x "$PUPPETCAM_BIN" ] || die "no puppetcam binary at $PUPPETCAM_BIN"
export PUPPETCAM_BIN
ORT=${ORT_DYLIB_PATH:-$(ls "$ROOT"/.venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.1.31.* 2>/dev/null | head -1 || true)}
[ -f "$ORT" ] || die "no libonnxruntime (set ORT_DYLIB_PATH or source scripts/setup.sh)"
export ORT_DYLIB_PATH=$ORT
mkdir -p "$CACHE/browser"
key=$( { sha256sum <"$ROOT/onnx/default_avatar.pcav"; sha256sum <"$PUPPETCAM_BIN"; } | sha256sum | cut -c1-12)
AVATAR=$CACHE/browser/astronaut-warp-$key.pcav
if [ ! -s "$AVATAR" ]; then
    work=$(mktemp -d)
    # The .pcav stores its one shot as a PNG (docs/avatar-file.md); cut it out.
    python3 - "$ROOT/onnx/default_avatar.pcav" "$work/astronaut.png" <<'EOF' || die "no PNG portrait in onnx/default_avatar.pcav"
import sys
d = open(sys.argv[1], 'rb').read()
i = d.find(b'\x89PNG\r\n\x1a\n')
j = d.find(b'IEND', i)
if i < 0 or j < 0:
    sys.exit(1)
open(sys.argv[2], 'wb').write(d[i:j + 8])
EOF
    "$PUPPETCAM_BIN" -q avatar create "$work/astronaut.png" --name astronaut --no-refiner --out "$AVATAR.tmp" >/dev/null \
        || die "puppetcam avatar create failed"
    mv "$AVATAR.tmp" "$AVATAR"
    rm -rf "$work"
fi
log "avatar $AVATAR"

# ---- overlay on run-systemd-test.sh's top layer ------------------------------------------------
overlay=$(mktemp -d)
trap 'rm -rf "$overlay"' EXIT
web=$overlay/usr/local/share/puppetcam-vmtest/web
mkdir -p "$web" "$overlay/usr/local/bin" "$overlay/etc/puppetcam" "$overlay/usr/local/share/puppetcam"
install -m 0644 "$ROOT/scripts/vm/browser/probe.html" "$web/index.html"
install -m 0755 "$ROOT/scripts/vm/browser/probe.py" "$overlay/usr/local/bin/puppetcam-browser-probe"
install -m 0755 "$ROOT/scripts/vm/browser-guest-test.sh" "$overlay/usr/local/bin/puppetcam-vmtest"
install -m 0644 "$AVATAR" "$overlay/usr/local/share/puppetcam/astronaut.pcav"
echo "$BROWSERS" >"$overlay/usr/local/share/puppetcam-vmtest/browsers"
# Screenshots cost seconds of console each: only sent when they are kept.
[ -z "${PUPPETCAM_BROWSER_OUT:-}" ] || touch "$overlay/usr/local/share/puppetcam-vmtest/export-screenshots"
# The browsers pull in D-Bus and logind; under TCG dbus.service does not start within its 90 s
# (then logind waits for it), which holds the boot for minutes. Neither browser needs them
# headless.
mkdir -p "$overlay/etc/systemd/system"
for u in dbus.service dbus.socket systemd-logind.service; do ln -s /dev/null "$overlay/etc/systemd/system/$u"; done
# As a user would configure it: the default size and format, a synthetic driver instead of a
# webcam. The guest edits this file for the format, size and reload scenarios.
cat >"$overlay/etc/puppetcam/puppetcam.toml" <<'EOF'
# The browser VM test's config: the drawn cartoon face as the driver, the warp avatar, the
# shipped loopback device at the default size and format.
[source]
kind = "synthetic"
width = 320
height = 240
fps = 10
[output]
device = "/dev/video10"
format = "yuyv"
width = 1280
height = 720
# The emulated CPU cannot convert and write 30 frames of 1280x720 a second beside a browser.
fps = 10
[avatar]
path = "/usr/local/share/puppetcam/astronaut.pcav"
[runtime]
providers = ["cpu"]
threads = 1
[face]
model_dir = "/usr/local/share/puppetcam/onnx"
iris = false
[service]
watch_avatar = false
# The emulated CPU (TCG) is slow, and a browser shares it.
stall_timeout_s = 30
source_lost_timeout_s = 120
EOF

# ---- boot the systemd VM with it -------------------------------------------------------------
# The browsers make the root about 1 GB: it goes on a disk image (PUPPETCAM_VM_ROOT_DISK=1), not
# into the initramfs. Left out as for the webcam test: Mesa's GL drivers and the LLVM (+ z3) only
# they link (both browsers render in software, headless), Vulkan's validation layer,
# documentation and translations.
EXCLUDE="/usr/lib/x86_64-linux-gnu/dri/* /usr/lib/x86_64-linux-gnu/libLLVM-* /usr/lib/x86_64-linux-gnu/libz3.so*"
EXCLUDE+=" /usr/lib/chromium/libVkLayer_khronos_validation.so"
EXCLUDE+=" /usr/share/doc/* /usr/share/man/* /usr/share/locale/*"
# In a fixed order: the root is cached per package list.
PKGS=python3,jq
case " $BROWSERS " in *" chromium "*) PKGS+=,chromium ;; esac
case " $BROWSERS " in *" firefox "*) PKGS+=,firefox-esr ;; esac
LOG=$CACHE/systemd/last-run-browser.log
set +e
PUPPETCAM_VM_NAME=browser PUPPETCAM_VM_EXTRA_PKGS=$PKGS PUPPETCAM_VM_ROOT_EXCLUDE=$EXCLUDE PUPPETCAM_VM_OVERLAY=$overlay \
    PUPPETCAM_VM_AUTOSTART=0 PUPPETCAM_VM_ROOT_DISK=1 PUPPETCAM_VM_MEM=${PUPPETCAM_VM_MEM:-4096M} \
    PUPPETCAM_VM_TIMEOUT=${PUPPETCAM_VM_TIMEOUT:-2400} PUPPETCAM_VM_SILENCE_S=${PUPPETCAM_VM_SILENCE_S:-300} \
    "$ROOT/scripts/vm/run-systemd-test.sh"
rc=$?
set -e
# Results and screenshots come out on the console as PUPPETCAM-FILE lines (base64): the VM has
# no disk or network to the host.
if [ -n "${PUPPETCAM_BROWSER_OUT:-}" ] && [ -f "$LOG" ]; then
    mkdir -p "$PUPPETCAM_BROWSER_OUT"
    python3 - "$LOG" "$PUPPETCAM_BROWSER_OUT" <<'EOF'
import base64, os, re, sys
parts = {}
for line in open(sys.argv[1], 'rb').read().decode('utf-8', 'replace').splitlines():
    m = re.search(r'PUPPETCAM-FILE ([A-Za-z0-9._-]+) (\d+)/(\d+) ([A-Za-z0-9+/=]+)', line)
    if m:
        parts.setdefault(m.group(1), {})[int(m.group(2))] = (int(m.group(3)), m.group(4))
for name, chunks in parts.items():
    total = next(iter(chunks.values()))[0]
    if len(chunks) != total:
        print(f'{name}: {len(chunks)} of {total} parts on the console, not written', file=sys.stderr)
        continue
    data = base64.b64decode(''.join(chunks[i][1] for i in range(total)))
    open(os.path.join(sys.argv[2], name), 'wb').write(data)
    print(f'wrote {os.path.join(sys.argv[2], name)} ({len(data)} bytes)', file=sys.stderr)
EOF
fi
exit $rc
