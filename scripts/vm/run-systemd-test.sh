#!/usr/bin/env bash
# The shipped system unit under a real systemd: boots Debian's kernel in qemu with a Debian
# bookworm root (built from Debian's packages with mmdebstrap) as the initramfs and systemd as
# PID 1, v4l2loopback loaded at boot through the shipped modprobe.d/modules-load.d files, the
# puppetcam binary and systemd/puppetcam-system.service installed, then checks inside the guest
# (scripts/vm/systemd-guest-test.sh):
#   1. the unit starts and reaches READY (Type=notify: active only after READY=1)
#   2. a reader on the loopback device gets frames
#   3. SIGSTOP of the daemon leads to a watchdog restart
#   4. a crash (SIGABRT, core dump) leads to Restart=on-failure
#   5. SIGHUP with a changed config is applied (same PID)
#   6. the daemon runs as the unprivileged `puppetcam` user, supplementary group `video` only
# Exits 0 only if the guest prints PUPPETCAM-VM: PASS.
#
# The kernel and v4l2loopback.ko come from run-v4l2-test.sh's cache (PUPPETCAM_VM_PREPARE_ONLY=1);
# the root file system is cached per kernel and module version under $PUPPETCAM_VM_CACHE.
#
# Environment (besides run-v4l2-test.sh's PUPPETCAM_VM_CACHE/_KREL/_REFRESH/_NO_APT):
#   PUPPETCAM_VM_TIMEOUT  seconds the VM may run (default 600)
#   PUPPETCAM_VM_SILENCE_S  stop the VM once its console has been silent this long (default 0:
#                         never); before stopping it, the vCPUs' registers and SysRq m/w/l/t
#                         (memory, blocked tasks, CPU backtraces, all tasks) are taken through
#                         the qemu monitor (last-run*.log.monitor and the console log)
#   PUPPETCAM_VM_ACCEL    tcg (default) or kvm. As for run-v4l2-test.sh, KVM is opt-in: on the
#                         sandboxed build host /dev/kvm exists but a KVM guest hangs right after
#                         the BIOS (no kernel output in 60 s), while TCG boots.
#   PUPPETCAM_BIN         the puppetcam binary to install (default: cargo build, target/debug)
#   ORT_DYLIB_PATH        libonnxruntime.so.1.31.x to install (scripts/setup.sh exports it)
# For other guest tests on the same root (run-webcam-test.sh):
#   PUPPETCAM_VM_EXTRA_PKGS   more Debian packages for the root, comma-separated (the root is
#                             cached per package list, so this builds and keeps a second root)
#   PUPPETCAM_VM_ROOT_EXCLUDE paths dpkg leaves out of that root (space-separated globs, as for
#                             dpkg's --path-exclude; part of the cache key)
#   PUPPETCAM_VM_OVERLAY      a directory copied over the top layer last (its config, guest test
#                             at usr/local/bin/puppetcam-vmtest, modprobe options, data replace ours)
#   PUPPETCAM_VM_AUTOSTART    0: puppetcam.service is not started at boot (the guest test starts it)
#   PUPPETCAM_VM_MEM          guest memory (default 3072M)
#   PUPPETCAM_VM_NAME         names this test's top layer, initrd and console log (default: none)
#   PUPPETCAM_VM_ROOT_DISK    1: the Debian root is an ext4 disk image (virtio, opened with
#                             snapshot=on, so the cached image never changes) instead of being
#                             unpacked from the initramfs into RAM. For big roots (the browsers'
#                             1 GB): under TCG, unpacking, copying and then freeing that much
#                             initramfs took minutes and stalled the guest (a 250 s soft lockup
#                             in switch_root's removal of the old root, seen with 1.3 GB). The
#                             initramfs then holds busybox, the virtio/ext4 modules and the top
#                             layer, which its /init copies onto the mounted disk.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE=${PUPPETCAM_VM_CACHE:-$HOME/.cache/puppetcam-vm}
TIMEOUT=${PUPPETCAM_VM_TIMEOUT:-600}
START=$(date +%s)
NAME=${PUPPETCAM_VM_NAME:-}
SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo

log() { printf '[%s-vm %3ss] %s\n' "${NAME:-systemd}" "$(($(date +%s) - START))" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

# ---- kernel + v4l2loopback.ko (shared cache with the v4l2 round trip) -------------------------
eval "$(PUPPETCAM_VM_PREPARE_ONLY=1 "$ROOT/scripts/vm/run-v4l2-test.sh" | grep -E '^(KREL|KDIR|LBDIR)=')"
[ -n "${KREL:-}" ] && [ -s "$KDIR/vmlinuz" ] && [ -s "$LBDIR/v4l2loopback.ko" ] || die "kernel/module preparation failed"
log "kernel $KREL, module $LBDIR/v4l2loopback.ko"

command -v mmdebstrap >/dev/null || { log "apt-get install mmdebstrap"; $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null; }

# ---- root file system: Debian + systemd + kernel modules + the puppetcam user (cached) --------
PKGS=systemd,systemd-sysv,udev,kmod,curl,v4l-utils,procps${PUPPETCAM_VM_EXTRA_PKGS:+,$PUPPETCAM_VM_EXTRA_PKGS}
# Bump ROOT_LAYOUT when the root set-up below changes.
ROOT_LAYOUT=1
EXCLUDE=${PUPPETCAM_VM_ROOT_EXCLUDE:-}
key=$(echo "$ROOT_LAYOUT $PKGS $KREL $(basename "$LBDIR")${EXCLUDE:+ exclude $EXCLUDE}" | sha256sum | cut -c1-12)
ROOT_DISK=${PUPPETCAM_VM_ROOT_DISK:-0}
case $ROOT_DISK in 0) BASE=$CACHE/systemd/base-$key.cpio ;; 1) BASE=$CACHE/systemd/base-$key.ext4 ;;
    *) die "PUPPETCAM_VM_ROOT_DISK=$ROOT_DISK: 0 or 1" ;; esac
if [ ! -s "$BASE" ]; then
    mkdir -p "$CACHE/systemd"
    rootfs=$CACHE/systemd/root-$key
    rm -rf "$rootfs"
    log "mmdebstrap bookworm ($PKGS)"
    dpkgopts=()
    # No globbing here: the patterns are for dpkg, not for the host's file system.
    read -r -a globs <<<"$EXCLUDE"
    for g in "${globs[@]}"; do dpkgopts+=("--dpkgopt=path-exclude=$g"); done
    $SUDO mmdebstrap --quiet --variant=minbase --include="$PKGS" "${dpkgopts[@]}" bookworm "$rootfs" >"$CACHE/systemd/mmdebstrap.log" 2>&1 \
        || { tail -20 "$CACHE/systemd/mmdebstrap.log" >&2; die "mmdebstrap failed"; }
    # The media modules v4l2loopback needs (run-v4l2-test.sh extracted drivers/media) + the module.
    mdir=$rootfs/lib/modules/$KREL
    mkdir -p "$mdir/kernel/drivers" "$mdir/updates"
    cp -a "$KDIR/modules/kernel/drivers/media" "$mdir/kernel/drivers/"
    cp "$LBDIR/v4l2loopback.ko" "$mdir/updates/"
    $SUDO chroot "$rootfs" depmod -a "$KREL"
    # The system unit's dedicated user (docs/service.md).
    $SUDO chroot "$rootfs" useradd --system --home-dir /var/lib/puppetcam --shell /usr/sbin/nologin --groups video puppetcam
    # No login prompt on the console; no network needed.
    $SUDO chroot "$rootfs" systemctl mask serial-getty@ttyS0.service getty@tty1.service systemd-networkd.service >/dev/null 2>&1 || true
    echo puppetcam-vm >"$rootfs/etc/hostname"
    log "packing the base root ($(du -sm "$rootfs" | cut -f1) MB)"
    if [ "$ROOT_DISK" = 1 ]; then
        # Room for what the tests write (journal, /tmp, browser profiles) besides the files.
        mkfs.ext4 -q -F -L puppetcam-root -d "$rootfs" "$BASE.tmp" "$(($(du -sm "$rootfs" | cut -f1) * 5 / 4 + 512))M" >/dev/null \
            || die "mkfs.ext4 -d failed (e2fsprogs >= 1.43 needed)"
    else
        (cd "$rootfs" && find . | LC_ALL=C sort | cpio -o -H newc --quiet) >"$BASE.tmp"
    fi
    mv "$BASE.tmp" "$BASE"
    rm -rf "$rootfs"
fi

# ---- top layer: binary, libraries, models, units, config, the guest test ---------------------
if [ -z "${PUPPETCAM_BIN:-}" ]; then
    log "cargo build"
    (cd "$ROOT" && cargo build --quiet --bin puppetcam) || die "cargo build failed"
    PUPPETCAM_BIN=$ROOT/target/debug/puppetcam
fi
[ -x "$PUPPETCAM_BIN" ] || die "no puppetcam binary at $PUPPETCAM_BIN"
ORT=${ORT_DYLIB_PATH:-$(ls "$ROOT"/.venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.1.31.* 2>/dev/null | head -1)}
[ -f "$ORT" ] || die "no libonnxruntime (set ORT_DYLIB_PATH or source scripts/setup.sh)"

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
# systemd's sandboxing (ProtectSystem=, the unit's mount namespace) does not work on the
# initramfs' rootfs, which is not a real mount (the unit fails with 200/CHDIR): /init copies the
# root into a tmpfs and switches to it, as an initrd switches to the real root.
cat >"$stage/init" <<'INIT'
#!/bin/sh
mount -t proc proc /proc
mkdir -p /newroot && mount -t tmpfs -o mode=0755 tmpfs /newroot
for d in /*; do
    case "$d" in /newroot|/proc|/sys|/dev|/init) ;; *) cp -a "$d" /newroot/ ;; esac
done
mkdir -p /newroot/proc /newroot/sys /newroot/dev /newroot/run /newroot/tmp
umount /proc
exec switch_root /newroot /usr/lib/systemd/systemd
INIT
chmod 0755 "$stage/init"
# Canonical paths only below: Debian's /lib is a symlink to usr/lib, and a real `lib` directory
# in this layer would replace it when the kernel unpacks the archive.
mkdir -p "$stage/usr/local/bin" "$stage/usr/local/lib/puppetcam" "$stage/usr/local/share/puppetcam/onnx" \
    "$stage/etc/systemd/system/multi-user.target.wants" "$stage/etc/systemd/system/puppetcam.service.d" \
    "$stage/etc/modprobe.d" "$stage/etc/modules-load.d" "$stage/etc/puppetcam"
objcopy --strip-debug "$PUPPETCAM_BIN" "$stage/usr/local/bin/puppetcam"
# Shared libraries the Debian root lacks (OpenCV and its dependencies), at their host paths.
ldd "$PUPPETCAM_BIN" | awk '/=> \//{print $3}' | sort -u | while read -r lib; do
    case "$lib" in */libc.so.*|*/libm.so.*|*/libgcc_s.so.*|*/libpthread.so.*|*/libdl.so.*|*/ld-linux*) continue ;; esac
    dir=$(readlink -f "$(dirname "$lib")")
    mkdir -p "$stage$dir"
    cp -L "$lib" "$stage$dir/"
done
cp -L "$ORT" "$stage/usr/local/lib/puppetcam/"
ORT_GUEST=/usr/local/lib/puppetcam/$(basename "$ORT")
cp "$ROOT"/onnx/face_detector.onnx "$ROOT"/onnx/face_landmarks.onnx "$stage/usr/local/share/puppetcam/onnx/"
cp "$ROOT/tests/fixtures/generator_ok.onnx" "$stage/usr/local/share/puppetcam/onnx/avatar.onnx"
install -m 0644 "$ROOT/systemd/puppetcam-system.service" "$stage/etc/systemd/system/puppetcam.service"
[ "${PUPPETCAM_VM_AUTOSTART:-1}" = 0 ] || ln -s ../puppetcam.service "$stage/etc/systemd/system/multi-user.target.wants/puppetcam.service"
# The only local addition: where ONNX Runtime is (a package would ship it next to the binary).
printf '[Service]\nEnvironment=ORT_DYLIB_PATH=%s\n' "$ORT_GUEST" >"$stage/etc/systemd/system/puppetcam.service.d/ort.conf"
install -m 0644 "$ROOT/systemd/modprobe.d/puppetcam-v4l2loopback.conf" "$stage/etc/modprobe.d/"
install -m 0644 "$ROOT/systemd/modules-load.d/puppetcam-v4l2loopback.conf" "$stage/etc/modules-load.d/"
cat >"$stage/etc/puppetcam/puppetcam.toml" <<EOF
# The VM test's config: the drawn cartoon face as the camera, the shipped loopback device.
[source]
kind = "synthetic"
width = 160
height = 120
fps = 10
[output]
device = "/dev/video10"
width = 320
height = 240
fps = 10
[avatar]
path = "/usr/local/share/puppetcam/onnx/avatar.onnx"
[runtime]
providers = ["cpu"]
threads = 1
ort_library = "$ORT_GUEST"
[face]
model_dir = "/usr/local/share/puppetcam/onnx"
iris = false
[service]
watch_avatar = false
# The emulated CPU (TCG) is slow: a face-tracker frame can take seconds.
stall_timeout_s = 30
source_lost_timeout_s = 120
EOF
install -m 0755 "$ROOT/scripts/vm/systemd-guest-test.sh" "$stage/usr/local/bin/puppetcam-vmtest"
install -D -m 0644 "$ROOT/scripts/vm/guest-lib.sh" "$stage/usr/local/lib/puppetcam-vmtest/guest-lib.sh"
cat >"$stage/etc/systemd/system/puppetcam-vmtest.service" <<'EOF'
[Unit]
Description=puppetcam systemd VM checks
After=multi-user.target
[Service]
Type=oneshot
ExecStart=/usr/local/bin/puppetcam-vmtest
StandardOutput=journal+console
StandardError=journal+console
EOF
mkdir -p "$stage/etc/systemd/system/default.target.wants"
ln -s ../puppetcam-vmtest.service "$stage/etc/systemd/system/default.target.wants/puppetcam-vmtest.service"
if [ -n "${PUPPETCAM_VM_OVERLAY:-}" ]; then
    [ -d "$PUPPETCAM_VM_OVERLAY" ] || die "PUPPETCAM_VM_OVERLAY=$PUPPETCAM_VM_OVERLAY is not a directory"
    cp -a "$PUPPETCAM_VM_OVERLAY"/. "$stage"/
fi
TOP=$CACHE/systemd/top${NAME:+-$NAME}.cpio
INITRD=$CACHE/systemd/initrd${NAME:+-$NAME}.cpio
disk=()
if [ "$ROOT_DISK" = 1 ]; then
    # The modules to mount the disk, from the kernel's package (cached; in load order: Debian
    # builds them all as modules).
    MODS=$CACHE/systemd/diskmods-$KREL
    diskmods="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk crc16 mbcache jbd2 crc32c_generic ext4"
    if [ ! -s "$MODS/order" ]; then
        kdeb=$(ls "$CACHE"/debs/linux-image-"$KREL"_*.deb 2>/dev/null | tail -1 || true)
        if [ -z "$kdeb" ]; then
            log "apt-get download linux-image-$KREL (the virtio and ext4 modules)"
            mkdir -p "$CACHE/debs"
            (cd "$CACHE/debs" && { apt-get download "linux-image-$KREL" >/dev/null 2>&1 \
                || { $SUDO apt-get update -qq >/dev/null 2>&1; apt-get download "linux-image-$KREL" >/dev/null 2>&1; }; }) \
                || die "apt-get download linux-image-$KREL failed"
            kdeb=$(ls "$CACHE"/debs/linux-image-"$KREL"_*.deb | tail -1)
        fi
        rm -rf "$MODS.tmp" && mkdir -p "$MODS.tmp/x"
        dpkg-deb --fsys-tarfile "$kdeb" | tar -x -C "$MODS.tmp/x" --wildcards "./lib/modules/$KREL/kernel/drivers/virtio/*" \
            "./lib/modules/$KREL/kernel/drivers/block/*" "./lib/modules/$KREL/kernel/fs/*" "./lib/modules/$KREL/kernel/lib/*" \
            "./lib/modules/$KREL/kernel/crypto/*" || die "could not extract modules from $kdeb"
        for m in $diskmods; do
            f=$(find "$MODS.tmp/x" -name "$m.ko" | head -1)
            [ -n "$f" ] || die "module $m not in $kdeb"
            cp "$f" "$MODS.tmp/"
        done
        echo "$diskmods" >"$MODS.tmp/order"
        rm -rf "$MODS.tmp/x" "$MODS"
        mv "$MODS.tmp" "$MODS"
    fi
    [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1 || die "a static /bin/busybox is needed (apt-get install busybox-static)"
    # The initramfs: busybox, the modules, this /init, and the top layer under /top.
    wrap=$(mktemp -d)
    rm -f "$stage/init"
    mv "$stage" "$wrap/top"
    stage=$wrap
    mkdir -p "$wrap/bin" "$wrap/modules" "$wrap/proc" "$wrap/dev" "$wrap/newroot"
    cp /bin/busybox "$wrap/bin/"
    cp "$MODS"/*.ko "$MODS/order" "$wrap/modules/"
    cat >"$wrap/init" <<'INIT'
#!/bin/busybox sh
# The Debian root is on /dev/vda: mount it, put the test's top layer over it, start systemd.
b=/bin/busybox
$b mount -t proc proc /proc
$b mount -t devtmpfs devtmpfs /dev
for m in $($b cat /modules/order); do $b insmod "/modules/$m.ko" || echo "init: insmod $m failed"; done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do $b sleep 0.1; i=$((i + 1)); done
$b mount -t ext4 /dev/vda /newroot || { echo "PUPPETCAM-VM: FAIL init: cannot mount the root disk"; $b poweroff -f; }
$b cp -a /top/. /newroot/
# cp -a also gives / the mode of /top (mktemp's 0700): no other user could reach anything
# (units fail with 200/CHDIR, dbus cannot start).
$b chmod 0755 /newroot
$b umount /dev
$b umount /proc
exec $b switch_root /newroot /usr/lib/systemd/systemd
INIT
    chmod 0755 "$wrap/init"
    disk=(-drive "file=$BASE,if=virtio,format=raw,snapshot=on")
    (cd "$stage" && find . | LC_ALL=C sort | cpio -o -H newc --quiet) >"$INITRD"
    log "root disk $(du -m "$BASE" | cut -f1) MB, initramfs $(du -m "$INITRD" | cut -f1) MB"
else
    (cd "$stage" && find . | LC_ALL=C sort | cpio -o -H newc --quiet) >"$TOP"
    cat "$BASE" "$TOP" >"$INITRD"
    log "initramfs $(du -m "$INITRD" | cut -f1) MB (top layer $(du -m "$TOP" | cut -f1) MB)"
fi

# ---- boot -------------------------------------------------------------------------------------
accel=${PUPPETCAM_VM_ACCEL:-tcg}
LOG=$CACHE/systemd/last-run${NAME:+-$NAME}.log
SILENCE=${PUPPETCAM_VM_SILENCE_S:-0}
log "booting ($accel, timeout ${TIMEOUT}s, silence limit ${SILENCE}s (0: none), console log $LOG)"
# The qemu monitor on a socket: the silence watchdog below asks it for the vCPUs' registers and
# presses SysRq (sysrq_always_enabled) when the guest stops talking.
MON=$(mktemp -u /tmp/puppetcam-vm-mon.XXXXXX)
set +e
timeout --foreground -k 5 "$TIMEOUT" qemu-system-x86_64 -accel "$accel" -m "${PUPPETCAM_VM_MEM:-3072M}" -smp "${PUPPETCAM_VM_SMP:-2}" \
    -nographic -no-reboot -kernel "$KDIR/vmlinuz" -initrd "$INITRD" "${disk[@]}" \
    -monitor "unix:$MON,server=on,wait=off" \
    -append "console=ttyS0 panic=-1 loglevel=4 sysrq_always_enabled" \
    </dev/null >"$LOG" 2>&1 &
qpid=$!
# A guest that prints nothing for PUPPETCAM_VM_SILENCE_S seconds (the guest tests print a
# heartbeat through the kernel log while a step runs long, so silence means the guest itself is
# stuck) is diagnosed and stopped: without this a hung guest holds CI until TIMEOUT.
watchdog() {
    local size last now
    last=$(date +%s)
    size=0
    while kill -0 "$qpid" 2>/dev/null; do
        sleep 10
        now=$(stat -c %s "$LOG" 2>/dev/null || echo 0)
        if [ "$now" != "$size" ]; then size=$now; last=$(date +%s); continue; fi
        [ $(($(date +%s) - last)) -ge "$SILENCE" ] || continue
        log "guest silent for ${SILENCE}s: vCPU registers, SysRq m/w/l/t, then stopping it (monitor log $LOG.monitor)"
        python3 - "$MON" >"$LOG.monitor" 2>&1 <<'PY'
import re, socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.settimeout(5)
def cmd(c, wait=1.0):
    s.sendall((c + "\n").encode())
    time.sleep(wait)
    out = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            out += d
    except socket.timeout:
        pass
    # The monitor echoes each typed character with cursor moves: only the text is kept.
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.decode("utf-8", "replace"))
    print(f"=== {c}\n{text}", flush=True)
cmd("info status")
cmd("info registers -a")
# SysRq 9 first: the dumps are printed at KERN_INFO, below the console's loglevel=4.
for key in ("alt-sysrq-9", "alt-sysrq-m", "alt-sysrq-w", "alt-sysrq-l", "alt-sysrq-t"):
    cmd("sendkey " + key, 10)
cmd("info registers -a")
cmd("quit")
PY
        echo "PUPPETCAM-VM-WATCHDOG: guest silent for ${SILENCE}s, stopped" >>"$LOG"
        kill "$qpid" 2>/dev/null
        return
    done
}
wpid=
[ "$SILENCE" -gt 0 ] && { watchdog & wpid=$!; }
wait "$qpid"
qrc=$?
[ -z "$wpid" ] || { kill "$wpid" 2>/dev/null; wait "$wpid" 2>/dev/null; }
rm -f "$MON"
set -e
grep -aoE 'PUPPETCAM-VM[:-].*' "$LOG" | tr -d '\r' >&2 || true
if grep -aq 'PUPPETCAM-VM: PASS' "$LOG"; then
    log "PASS"
    exit 0
fi
[ $qrc -eq 124 ] && log "VM timed out after ${TIMEOUT}s"
tail -60 "$LOG" >&2
die "systemd checks did not pass (qemu rc $qrc, full log $LOG)"
