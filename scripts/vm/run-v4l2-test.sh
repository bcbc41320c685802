#!/usr/bin/env bash
# Real v4l2loopback round trip without touching the host kernel: boots a Debian kernel in qemu
# (TCG, no KVM needed) with a busybox initramfs that loads v4l2loopback and runs
# examples/v4l2_roundtrip.rs against /dev/video10. Exits 0 only if the guest prints PASS.
#
# Idempotent; everything downloaded or built is cached under $PUPPETCAM_VM_CACHE
# (default ~/.cache/puppetcam-vm), keyed by kernel ABI and v4l2loopback version, so a warm run
# only rebuilds the test binary and the small top layer of the initramfs.
#
# Environment:
#   PUPPETCAM_VM_CACHE    cache directory (default ~/.cache/puppetcam-vm)
#   PUPPETCAM_VM_KREL     kernel release to test against, e.g. 6.1.0-56-amd64 (default: the one
#                         cached by the last run, else what Debian's linux-image-amd64 points at)
#   PUPPETCAM_VM_REFRESH  1: re-resolve the kernel release from apt instead of the cached one
#   PUPPETCAM_VM_TIMEOUT  seconds the VM may run (default 300)
#   PUPPETCAM_VM_NO_APT   1: never call apt-get (fail instead when something is missing)
#   PUPPETCAM_VM_ACCEL    qemu accelerator, tcg (default) or kvm
#   PUPPETCAM_VM_BIN      use this prebuilt round-trip binary instead of `cargo build --example`
#   PUPPETCAM_VM_PREPARE_ONLY  1: only cache the kernel and v4l2loopback.ko, print KREL=, KDIR=,
#                         LBDIR= and exit (run-systemd-test.sh boots the same kernel and module)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE=${PUPPETCAM_VM_CACHE:-$HOME/.cache/puppetcam-vm}
TIMEOUT=${PUPPETCAM_VM_TIMEOUT:-300}
START=$(date +%s)
mkdir -p "$CACHE/debs"

# apt needs root; CI runners that are not root usually have passwordless sudo.
SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo

log() { printf '[vm-test %3ss] %s\n' "$(($(date +%s) - START))" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

apt_install() {
    [ "${PUPPETCAM_VM_NO_APT:-0}" = 1 ] && die "missing packages: $* (PUPPETCAM_VM_NO_APT=1)"
    log "apt-get install $*"
    # `apt-get update` only when the lists are missing or the install fails on stale ones.
    if ! $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >"$CACHE/apt.log" 2>&1; then
        $SUDO apt-get update -qq >>"$CACHE/apt.log" 2>&1 || true
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >>"$CACHE/apt.log" 2>&1 \
            || { tail -20 "$CACHE/apt.log" >&2
                 die "apt-get install $* failed (if Debian moved to a newer kernel ABI, rerun with PUPPETCAM_VM_REFRESH=1)"; }
    fi
}

# apt-get download into the cache (as root apt warns it cannot drop privileges there; harmless).
apt_download() {
    local pkg=$1
    if ! ls "$CACHE/debs/${pkg}"_*.deb >/dev/null 2>&1; then
        [ "${PUPPETCAM_VM_NO_APT:-0}" = 1 ] && die "$pkg not cached (PUPPETCAM_VM_NO_APT=1)"
        log "apt-get download $pkg"
        (cd "$CACHE/debs" && { apt-get download "$pkg" >/dev/null 2>&1 \
            || { $SUDO apt-get update -qq >/dev/null 2>&1; apt-get download "$pkg" >/dev/null 2>&1; }; }) \
            || die "apt-get download $pkg failed (if Debian moved to a newer kernel ABI, rerun with PUPPETCAM_VM_REFRESH=1)"
    fi
    ls "$CACHE/debs/${pkg}"_*.deb | tail -1
}

# ---- host tools -------------------------------------------------------------------------------
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
[ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1 || need+=(busybox-static)
command -v cpio >/dev/null || need+=(cpio)
command -v xz >/dev/null || need+=(xz-utils)
command -v zstd >/dev/null || need+=(zstd)
command -v make >/dev/null || need+=(make)
command -v gcc >/dev/null || need+=(gcc)
command -v strings >/dev/null || need+=(binutils)
[ ${#need[@]} -eq 0 ] || apt_install "${need[@]}"

# ---- kernel release ---------------------------------------------------------------------------
KREL=${PUPPETCAM_VM_KREL:-}
if [ -z "$KREL" ] && [ "${PUPPETCAM_VM_REFRESH:-0}" != 1 ] && [ -s "$CACHE/krel" ]; then
    KREL=$(cat "$CACHE/krel")
fi
if [ -z "$KREL" ]; then
    resolve() { apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/.*Depends: linux-image-\(.*\)$/\1/p' | head -1; }
    KREL=$(resolve)
    if [ -z "$KREL" ]; then $SUDO apt-get update -qq >/dev/null 2>&1 || true; KREL=$(resolve); fi
    [ -n "$KREL" ] || die "cannot resolve the Debian kernel release (set PUPPETCAM_VM_KREL=6.1.0-NN-amd64)"
fi
echo "$KREL" >"$CACHE/krel"
KDIR=$CACHE/kernel/$KREL
log "kernel $KREL"

# ---- kernel image + in-tree modules (extracted, never installed) ------------------------------
if [ ! -s "$KDIR/vmlinuz" ]; then
    deb=$(apt_download "linux-image-$KREL")
    rm -rf "$KDIR.tmp" && mkdir -p "$KDIR.tmp"
    log "extracting $(basename "$deb")"
    dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$KDIR.tmp" \
        ./boot/ "./lib/modules/$KREL/kernel/drivers/media/"
    mkdir -p "$KDIR.tmp/out"
    mv "$KDIR.tmp/boot/vmlinuz-$KREL" "$KDIR.tmp/out/vmlinuz"
    mv "$KDIR.tmp/lib/modules/$KREL" "$KDIR.tmp/out/modules"
    rm -rf "$KDIR" && mv "$KDIR.tmp/out" "$KDIR" && rm -rf "$KDIR.tmp"
    # The deb is 70 MB and no longer needed once extracted.
    rm -f "$deb"
fi

# ---- v4l2loopback.ko built for exactly that kernel --------------------------------------------
HDR=/usr/src/linux-headers-$KREL
[ -f "$HDR/Makefile" ] || apt_install "linux-headers-$KREL"
lbdeb=$(apt_download v4l2loopback-dkms)
LBVER=$(basename "$lbdeb" | sed 's/^v4l2loopback-dkms_\([^_]*\)_.*/\1/')
LBDIR=$CACHE/v4l2loopback/$LBVER-$KREL
if [ ! -s "$LBDIR/v4l2loopback.ko" ]; then
    log "building v4l2loopback $LBVER for $KREL"
    rm -rf "$LBDIR" && mkdir -p "$LBDIR/src"
    dpkg-deb --fsys-tarfile "$lbdeb" | tar -x -C "$LBDIR/src" --strip-components=4 ./usr/src/
    # Debian builds its kernel with gcc-12; the kbuild checks for the same compiler.
    make -s -C "$HDR" M="$LBDIR/src" modules >"$LBDIR/build.log" 2>&1 \
        || { tail -30 "$LBDIR/build.log" >&2; die "v4l2loopback build failed (log: $LBDIR/build.log)"; }
    cp "$LBDIR/src/v4l2loopback.ko" "$LBDIR/"
fi
# modinfo fields straight from .modinfo, so the host needs no kmod.
modfield() { strings -a "$2" | sed -n "s/^$1=//p" | head -1; }
vermagic=$(modfield vermagic "$LBDIR/v4l2loopback.ko")
case "$vermagic" in "$KREL "*) ;; *) die "v4l2loopback.ko vermagic '$vermagic' does not match $KREL" ;; esac
if [ "${PUPPETCAM_VM_PREPARE_ONLY:-0}" = 1 ]; then
    printf 'KREL=%s\nKDIR=%s\nLBDIR=%s\n' "$KREL" "$KDIR" "$LBDIR"
    exit 0
fi

unpack() { # module file (maybe compressed) -> plain .ko on stdout
    case "$1" in
        *.ko.xz) xz -dc "$1" ;;
        *.ko.zst) zstd -qdc "$1" ;;
        *) cat "$1" ;;
    esac
}

# ---- base initramfs layer: busybox, kernel modules, /init (cached per kernel + module) -------
BASE=$CACHE/initramfs/base-$LBVER-$KREL.cpio
if [ ! -s "$BASE" ] || [ "$BASE" -ot "$ROOT/scripts/vm/init.sh" ] || [ "$BASE" -ot "${BASH_SOURCE[0]}" ]; then
    log "building base initramfs"
    stage=$(mktemp -d)
    mkdir -p "$stage"/{bin,sbin,dev,proc,sys,tmp,modules} "$(dirname "$BASE")"
    cp /bin/busybox "$stage/bin/busybox"
    for app in sh mount insmod poweroff echo cat ls sleep dmesg timeout uname; do ln -s busybox "$stage/bin/$app"; done
    # Dependencies of v4l2loopback in load order.
    deps=$(modfield depends "$LBDIR/v4l2loopback.ko" | tr ',' ' ')
    order=()
    # modules.dep only exists after depmod, so follow each module's own `depends=` instead.
    add_mod() { # name -> appends, dependencies first, the module's path under $KDIR/modules
        local name=$1 rel d o
        rel=$(cd "$KDIR/modules" && find kernel -regextype posix-extended \
            -regex ".*/${name//[-_]/[-_]}\.ko(\.xz|\.zst)?" | head -1)
        # Not shipped as a file: built into the kernel (or outside drivers/media, and insmod says so).
        [ -n "$rel" ] || { log "note: module $name not found in drivers/media, assuming built in"; return 0; }
        for o in "${order[@]:-}"; do [ "$o" = "$rel" ] && return 0; done
        for d in $(modfield depends <(unpack "$KDIR/modules/$rel") | tr ',' ' '); do add_mod "$d"; done
        order+=("$rel")
    }
    for m in $deps; do add_mod "$m"; done
    : >"$stage/modules/order"
    for rel in "${order[@]}"; do
        name=$(basename "${rel%%.ko*}")
        unpack "$KDIR/modules/$rel" >"$stage/modules/$name.ko"
        echo "$name" >>"$stage/modules/order"
    done
    cp "$LBDIR/v4l2loopback.ko" "$stage/modules/"
    install -m 0755 "$ROOT/scripts/vm/init.sh" "$stage/init"
    (cd "$stage" && find . | LC_ALL=C sort | cpio -o -H newc --quiet) >"$BASE.tmp"
    mv "$BASE.tmp" "$BASE"
    rm -rf "$stage"
    log "modules: $(echo "${order[@]}" | xargs -n1 basename | tr '\n' ' ')v4l2loopback"
fi

# ---- test binary layer -------------------------------------------------------------------------
if [ -n "${PUPPETCAM_VM_BIN:-}" ]; then
    BIN=$PUPPETCAM_VM_BIN
else
    log "cargo build --example v4l2_roundtrip"
    (cd "$ROOT" && cargo build --quiet --example v4l2_roundtrip --features v4l2) || die "cargo build failed"
    BIN=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps 2>/dev/null \
        | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/debug/examples/v4l2_roundtrip
fi
[ -x "$BIN" ] || die "no test binary at $BIN"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
# Debug info is 50 MB of the binary and useless in the guest.
objcopy --strip-debug "$BIN" "$stage/roundtrip"
# Shared libraries at their host paths (the guest has no ld.so.cache, so paths must match).
ldd "$BIN" | awk '/=> \//{print $3} /^[ \t]*\//{print $1}' | sort -u | while read -r lib; do
    mkdir -p "$stage$(dirname "$lib")"
    cp -L "$lib" "$stage$lib"
done
# Debian's loader path is /lib64/ld-linux-x86-64.so.2 -> /lib/x86_64-linux-gnu/...; add both.
if [ -e /lib64/ld-linux-x86-64.so.2 ]; then mkdir -p "$stage/lib64"; cp -L /lib64/ld-linux-x86-64.so.2 "$stage/lib64/"; fi
TOP=$CACHE/initramfs/top.cpio
(cd "$stage" && find . | LC_ALL=C sort | cpio -o -H newc --quiet) >"$TOP"
INITRD=$CACHE/initramfs/initrd.cpio
cat "$BASE" "$TOP" >"$INITRD"
log "initramfs $(du -k "$INITRD" | cut -f1) KiB (base $(du -k "$BASE" | cut -f1) KiB, binary+libs $(du -k "$TOP" | cut -f1) KiB)"

# ---- boot -------------------------------------------------------------------------------------
# TCG by default: KVM is faster but on nested/sandboxed CI hosts /dev/kvm can exist and still
# hang at boot, so it is opt-in (PUPPETCAM_VM_ACCEL=kvm).
accel=${PUPPETCAM_VM_ACCEL:-tcg}
LOG=$CACHE/last-run.log
log "booting ($accel, timeout ${TIMEOUT}s, console log $LOG)"
set +e
timeout --foreground -k 5 "$TIMEOUT" qemu-system-x86_64 -accel "$accel" -m 512M -smp ${PUPPETCAM_VM_SMP:-2} -nographic -no-reboot \
    -kernel "$KDIR/vmlinuz" -initrd "$INITRD" \
    -append "console=ttyS0 panic=-1 quiet loglevel=4 puppetcam.args=${PUPPETCAM_VM_ARGS:-}" \
    </dev/null >"$LOG" 2>&1
qrc=$?
set -e
# The serial console interleaves terminal escapes, so match anywhere in the line.
grep -aoE '(roundtrip|PUPPETCAM-VM):.*' "$LOG" | tr -d '\r' >&2 || true
if grep -aq 'PUPPETCAM-VM: PASS' "$LOG"; then
    log "PASS"
    exit 0
fi
[ $qrc -eq 124 ] && log "VM timed out after ${TIMEOUT}s"
tail -40 "$LOG" >&2
die "round trip did not pass (qemu rc $qrc, full log $LOG)"
