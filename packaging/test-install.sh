#!/usr/bin/env bash
# Install test of the Debian package in a clean Debian root of this machine's release (so the
# package's shlibdeps resolve to the libraries the binary was linked against): apt installs the
# .deb with its dependencies, `puppetcam check` and `puppetcam demo` run from /usr/bin with no
# environment variable pointing anywhere; nothing is installed under */modules-load.d (loading
# v4l2loopback at boot is opt-in); an upgrade (the same .deb repacked with a higher version)
# under a faked running systemd restarts the running system and user units and stops nothing;
# the units are then enabled (`systemctl enable`, `--global enable`, `add-wants`), the package is
# purged and the root must be exactly as before (files, enable links, users, groups).
# Usage: packaging/test-install.sh [path/to/puppetcam_*.deb]   (default: the newest in target/debian)
# Needs root (chroot, mounts) and mmdebstrap (installed when missing).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEB="${1:-$(ls -t "$ROOT"/target/debian/puppetcam_*.deb 2>/dev/null | head -n1)}"
[ -f "$DEB" ] || { echo "test-install: no .deb (run scripts/package.sh first)" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "test-install: needs root (chroot)" >&2; exit 2; }
command -v mmdebstrap >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null; }
SUITE="$(. /etc/os-release && echo "$VERSION_CODENAME")"

WORK="$(mktemp -d /tmp/puppetcam-deb-test.XXXXXX)"
R="$WORK/root"
cleanup() {
  for m in "$R/dev/pts" "$R/dev" "$R/proc" "$R/sys"; do mountpoint -q "$m" 2>/dev/null && umount -l "$m"; done
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "test-install: FAIL: $*" >&2; exit 1; }
t0=$SECONDS

echo "test-install: building a clean $SUITE root (mmdebstrap minbase)"
mmdebstrap --quiet --variant=minbase --include=systemd,systemd-sysv,udev,kmod "$SUITE" "$R"
mount -t proc proc "$R/proc"
mount -t sysfs sysfs "$R/sys"
mount --bind /dev "$R/dev"
cp /etc/resolv.conf "$R/etc/resolv.conf"
in_root() { chroot "$R" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"; }
in_root apt-get update -qq

# State before: every path outside runtime/package-manager bookkeeping, and the accounts.
snapshot() {
  (cd "$R" && find . -xdev \( -path ./proc -o -path ./sys -o -path ./dev -o -path ./tmp -o -path ./run \
      -o -path ./var/lib/apt -o -path ./var/lib/dpkg -o -path ./var/cache/apt -o -path ./var/cache/debconf \
      -o -path ./var/cache/ldconfig -o -path ./var/log -o -path ./etc/ld.so.cache -o -path ./root \) -prune -o -print | sort)
  cat "$R/etc/passwd" "$R/etc/group" "$R/etc/shadow" "$R/etc/gshadow"
}
snapshot > "$WORK/before"

echo "test-install: apt install $(basename "$DEB")"
cp "$DEB" "$R/tmp/puppetcam.deb"
# Without Recommends: v4l2loopback-dkms would build a kernel module a chroot cannot load (the
# VM test of scripts/vm covers v4l2loopback).
in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends /tmp/puppetcam.deb >"$WORK/apt.log" 2>&1 || { tail -30 "$WORK/apt.log"; fail "apt install"; }

# Layout and package metadata.
for f in /usr/bin/puppetcam /usr/share/puppetcam/onnx/default_avatar.pcav /usr/share/puppetcam/onnx/face_detector.onnx \
         /usr/share/puppetcam/onnx/face_landmarks.onnx /usr/share/doc/puppetcam/onnxruntime/LICENSE \
         /etc/puppetcam/puppetcam.toml /lib/systemd/system/puppetcam.service /usr/lib/systemd/user/puppetcam.service \
         /lib/modprobe.d/puppetcam-v4l2loopback.conf /usr/share/doc/puppetcam/examples/puppetcam-v4l2loopback.conf; do
  [ -f "$R$f" ] || fail "$f not installed"
done
ls "$R"/usr/lib/puppetcam/libonnxruntime.so.* >/dev/null || fail "no libonnxruntime in /usr/lib/puppetcam"
in_root dpkg-query -W -f='${Conffiles}\n' puppetcam | grep -q '/etc/puppetcam/puppetcam.toml' || fail "puppetcam.toml is not a conffile"
in_root dpkg-query -W -f='${Recommends}\n' puppetcam | grep -q 'v4l2loopback-dkms' || fail "no Recommends: v4l2loopback-dkms"
in_root dpkg-query -W -f='${Depends}\n' puppetcam | grep -q 'libopencv' || fail "Depends lacks the shlibdeps (libopencv)"
grep -q '^ExecStart=/usr/bin/puppetcam' "$R/lib/systemd/system/puppetcam.service" || fail "system unit does not run /usr/bin/puppetcam"
for u in /lib/systemd/system/puppetcam.service /usr/lib/systemd/user/puppetcam.service; do
  for key in MemoryHigh MemoryMax TasksMax; do grep -q "^$key=[0-9]" "$R$u" || fail "$u has no $key="; done
done
# Loading v4l2loopback at every boot is opt-in: the package installs nothing under modules-load.d.
in_root dpkg -L puppetcam | grep '/modules-load\.d/' && fail "the package installs a modules-load.d file"
ml="$(find "$R/etc/modules-load.d" "$R/usr/lib/modules-load.d" "$R/lib/modules-load.d" -name '*puppetcam*' 2>/dev/null || true)"
[ -z "$ml" ] || fail "modules-load.d files after install: $ml"
in_root id -nG puppetcam | tr ' ' '\n' | grep -qx video || fail "user puppetcam is not in group video"
in_root ldd /usr/bin/puppetcam | grep -q "not found" && fail "unresolved libraries: $(in_root ldd /usr/bin/puppetcam | grep 'not found')"

# check and demo from /usr/bin, from a directory with nothing of the source tree.
echo "test-install: puppetcam check"
set +e
in_root sh -c 'cd /tmp && puppetcam check' >"$WORK/check.log" 2>&1
check_rc=$?
set -e
cat "$WORK/check.log"
grep -q '^OK   ONNX Runtime: 1\.31\.[0-9]* from /usr/lib/puppetcam/libonnxruntime\.so' "$WORK/check.log" || fail "check: ONNX Runtime not from /usr/lib/puppetcam"
grep -q '^OK   execution provider CPU' "$WORK/check.log" || fail "check: CPU provider"
grep -q '^OK   face models: /usr/share/puppetcam/onnx/face_detector.onnx' "$WORK/check.log" || fail "check: face models not from /usr/share/puppetcam"
grep -q '^OK   avatar: /usr/share/puppetcam/onnx/default_avatar.pcav' "$WORK/check.log" || fail "check: avatar not from /usr/share/puppetcam"
grep -q 'ERROR' "$WORK/check.log" && fail "check logged an ERROR on a CPU-only machine"
[ "$check_rc" -eq 0 ] || fail "check exited $check_rc"

echo "test-install: puppetcam check --config /etc/puppetcam/puppetcam.toml (the conffile parses, paths resolve)"
in_root puppetcam check --config /etc/puppetcam/puppetcam.toml >"$WORK/check-etc.log" 2>&1 || true
grep -q '^OK   avatar: /usr/share/puppetcam/onnx/default_avatar.pcav' "$WORK/check-etc.log" || { cat "$WORK/check-etc.log"; fail "check --config /etc/puppetcam/puppetcam.toml"; }

echo "test-install: puppetcam demo (as the puppetcam user)"
in_root sh -c 'mkdir -p /tmp/demo && chown puppetcam /tmp/demo && cd /tmp/demo && setpriv --reuid=puppetcam --regid=puppetcam --init-groups env RUST_LOG=info,ort=warn puppetcam demo --frames 25 --out /tmp/demo/demo.y4m' >"$WORK/demo.log" 2>&1 \
  || { cat "$WORK/demo.log"; fail "demo"; }
cat "$WORK/demo.log"
# Y4M: one header line, then per frame "FRAME\n" and a 640x480 I420 image.
y4m="$R/tmp/demo/demo.y4m"
head -n1 "$y4m" | grep -q '^YUV4MPEG2 W640 H480 ' || fail "demo output is not a 640x480 Y4M"
size=$(stat -c %s "$y4m"); header=$(head -n1 "$y4m" | wc -c)
[ "$size" -eq $((header + 25 * (6 + 640 * 480 * 3 / 2))) ] || fail "demo wrote $size bytes, not 25 frames of 640x480"
grep -q 'ERROR' "$WORK/demo.log" && fail "demo logged an ERROR on a CPU-only machine"
grep -q "warp avatar \`astronaut\`" "$WORK/demo.log" || fail "demo: the default warp avatar was not used"
# The generator avatar (an ONNX network) picks an execution provider: one INFO line, no ERROR.
in_root sh -c 'cd /tmp/demo && setpriv --reuid=puppetcam --regid=puppetcam --init-groups env RUST_LOG=info,ort=warn puppetcam demo --frames 5 --out /tmp/demo/gen.y4m --avatar /usr/share/puppetcam/onnx/default_avatar.onnx' >"$WORK/demo-gen.log" 2>&1 \
  || { cat "$WORK/demo-gen.log"; fail "demo with the generator avatar"; }
grep -q 'ERROR' "$WORK/demo-gen.log" && { cat "$WORK/demo-gen.log"; fail "generator demo logged an ERROR on a CPU-only machine"; }
grep -q 'CPU-only ONNX Runtime, running on CPU' "$WORK/demo-gen.log" || { cat "$WORK/demo-gen.log"; fail "generator demo: no 'CPU-only ONNX Runtime' line"; }
rm -rf "$R/tmp/demo"

# Upgrade: the same package repacked with a higher version, installed over it while a faked
# systemd (/run/systemd/system, a systemctl earlier on PATH that logs its arguments, reports
# every unit active and one user manager, user@1000) "runs" the units. postinst must restart
# the system unit and the user unit of that manager; nothing may stop them (prerm upgrade).
echo "test-install: upgrade restarts the running units"
dpkg-deb -R "$DEB" "$WORK/repack"
old_ver="$(sed -n 's/^Version: //p' "$WORK/repack/DEBIAN/control")"
new_ver="$old_ver+upgradetest"
sed -i "s/^Version: .*/Version: $new_ver/" "$WORK/repack/DEBIAN/control"
dpkg-deb -Zgzip -z1 -b "$WORK/repack" "$R/tmp/puppetcam-upgrade.deb" >/dev/null
rm -rf "$WORK/repack"
mkdir -p "$R/tmp/shim"
cat > "$R/tmp/shim/systemctl" <<'SHIM'
#!/bin/sh
echo "systemctl $*" >> /tmp/systemctl.log
case " $* " in
  *" list-units "*) echo "user@1000.service loaded active running User Manager for UID 1000" ;;
  *" is-enabled "*) echo enabled ;;
esac
exit 0
SHIM
chmod 755 "$R/tmp/shim/systemctl"
had_run_systemd=0; [ -e "$R/run/systemd" ] && had_run_systemd=1
mkdir -p "$R/run/systemd/system"
in_root env PATH=/tmp/shim:/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive dpkg -i /tmp/puppetcam-upgrade.deb >>"$WORK/apt.log" 2>&1 \
  || { tail -30 "$WORK/apt.log"; fail "upgrade to $new_ver"; }
if [ "$had_run_systemd" = 1 ]; then rmdir "$R/run/systemd/system"; else rm -rf "$R/run/systemd"; fi
touch "$R/tmp/systemctl.log"; cp "$R/tmp/systemctl.log" "$WORK/systemctl.log"
rm -rf "$R/tmp/shim" "$R/tmp/systemctl.log" "$R/tmp/puppetcam-upgrade.deb"
sed 's/^/  upgrade: /' "$WORK/systemctl.log"
[ "$(in_root dpkg-query -W -f='${Version}' puppetcam)" = "$new_ver" ] || fail "upgrade: $new_ver not installed"
grep -v -- '--user' "$WORK/systemctl.log" | grep -Eq ' (try-)?restart puppetcam\.service$' || fail "upgrade did not restart the running puppetcam.service"
grep -Eq -- '--user --machine 1000@ (try-)?restart puppetcam\.service$' "$WORK/systemctl.log" || fail "upgrade did not restart the running user unit of user@1000"
grep -Eq ' stop( |$)' "$WORK/systemctl.log" && fail "upgrade stopped the unit"

# Enable links an admin makes must go with the purge: the WantedBy= links of both units, which
# postinst recorded for deb-systemd-helper, and one it cannot know (add-wants).
echo "test-install: enable the units"
in_root systemctl enable puppetcam.service >>"$WORK/apt.log" 2>&1 || fail "systemctl enable"
in_root systemctl --global enable puppetcam.service >>"$WORK/apt.log" 2>&1 || fail "systemctl --global enable"
in_root systemctl add-wants graphical.target puppetcam.service >>"$WORK/apt.log" 2>&1 || fail "systemctl add-wants"
for l in /etc/systemd/system/multi-user.target.wants/puppetcam.service /etc/systemd/user/default.target.wants/puppetcam.service \
         /etc/systemd/system/graphical.target.wants/puppetcam.service; do
  [ -L "$R$l" ] || fail "enabling did not create $l"
done

echo "test-install: apt purge"
in_root env DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq --autoremove puppetcam >>"$WORK/apt.log" 2>&1 || { tail -30 "$WORK/apt.log"; fail "apt purge"; }
in_root dpkg-query -W -f='${db:Status-Status}\n' puppetcam 2>/dev/null | grep -qv 'not-installed' && fail "puppetcam still known to dpkg"
rm -f "$R/tmp/puppetcam.deb"
links="$(find "$R/etc/systemd" -name '*puppetcam*' | sed "s#^$R##")"
[ -z "$links" ] || fail "enable links left after purge: $links"
snapshot > "$WORK/after"
if ! diff -u "$WORK/before" "$WORK/after" > "$WORK/diff"; then
  cat "$WORK/diff"; fail "the root differs after purge"
fi
left="$(cd "$R" && find . -xdev \( -path ./proc -o -path ./sys -o -path ./dev \) -prune -o -name '*puppetcam*' -print)"
[ -z "$left" ] || fail "left behind: $left"
echo "test-install: ok ($((SECONDS - t0)) s; $(du -h "$DEB" | cut -f1) package, $(wc -l < "$WORK/before") paths compared)"
