#!/usr/bin/env bash
# Builds the Debian package target/debian/puppetcam_<version>_<arch>.deb with cargo-deb:
# /usr/bin/puppetcam, models + default avatar in /usr/share/puppetcam/onnx, ONNX Runtime (CPU) and
# its licence in /usr/lib/puppetcam and /usr/share/doc/puppetcam/onnxruntime, the user and system
# units, the v4l2loopback modprobe.d file (the modules-load.d one only as an opt-in example in
# /usr/share/doc/puppetcam/examples), the maintainer scripts of packaging/debian and
# /etc/puppetcam/puppetcam.toml.
# Usage: scripts/package.sh [--no-build]   (--no-build packages the existing release binary)
# Runs the runtime set-up (its venv's pip fetches the ONNX Runtime wheel); needs dpkg-dev (shlibdeps) and cargo-deb; installs
# the last two when missing. Prints the .deb's path on the last line.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CARGO_DEB_VERSION=3.8.0
BUILD=1
for a in "$@"; do
  case "$a" in
    --no-build) BUILD=0 ;;
    *) echo "package: unknown argument $a" >&2; exit 2 ;;
  esac
done

source scripts/setup.sh runtime
if ! dpkg -s dpkg-dev >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends dpkg-dev >/dev/null
fi
if ! cargo deb --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION"; then
  echo "package: installing cargo-deb $CARGO_DEB_VERSION"
  cargo install --locked cargo-deb --version "$CARGO_DEB_VERSION"
fi

# Staged assets (see [package.metadata.deb] in Cargo.toml).
STAGE=target/deb-assets
rm -rf "$STAGE"
mkdir -p "$STAGE/lib" "$STAGE/doc/onnxruntime"
# ONNX Runtime: always the CPU wheel of scripts/requirements-runtime.txt, whatever this machine's
# venv has (a GPU build needs NVIDIA libraries the package cannot depend on; README "GPU" says
# how to point the config at one).
"$VENV/bin/pip" download -q --disable-pip-version-check --no-deps --only-binary=:all: \
  -r scripts/requirements-runtime.txt -d target/deb-wheel
WHEEL="$(ls -t target/deb-wheel/onnxruntime-*.whl | head -n1)"
"$VENV/bin/python" - "$WHEEL" "$STAGE" <<'PY'
import re, sys, zipfile
wheel, stage = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for n in z.namelist():
        base = n.rsplit("/", 1)[-1]
        if re.fullmatch(r"onnxruntime/capi/libonnxruntime\.so\.[0-9.]+", n):
            dest = f"{stage}/lib/{base}"
        elif n in ("onnxruntime/LICENSE", "onnxruntime/ThirdPartyNotices.txt"):
            dest = f"{stage}/doc/onnxruntime/{base}"
        else:
            continue
        with z.open(n) as src, open(dest, "wb") as out:
            out.write(src.read())
PY
ls "$STAGE"/lib/libonnxruntime.so.* "$STAGE/doc/onnxruntime/LICENSE" >/dev/null
# Units: the packaged binary is /usr/bin/puppetcam.
for u in puppetcam.service puppetcam-system.service; do
  sed 's#/usr/local/bin/puppetcam#/usr/bin/puppetcam#g' "systemd/$u" > "$STAGE/$u"
  grep -q '^ExecStart=/usr/bin/puppetcam ' "$STAGE/$u" || { echo "package: systemd/$u: no ExecStart for /usr/bin/puppetcam" >&2; exit 1; }
done
# /etc/puppetcam/puppetcam.toml: the example config with installed paths.
sed -e '1,2c\
# puppetcam system configuration, installed by the Debian package (a conffile: your changes are\
# kept on upgrades). Used by the system unit; a user config in ~/.config/puppetcam/ comes first.' \
    -e 's#^path = "onnx/default_avatar.pcav"#path = "/usr/share/puppetcam/onnx/default_avatar.pcav"#' \
    -e 's#^\# ort_library = .*#\# ort_library = "/path/to/libonnxruntime.so.1.31.1"   \# default: /usr/lib/puppetcam (CPU build); a GPU build: README "GPU"#' \
    puppetcam.example.toml > "$STAGE/puppetcam.toml"
grep -q '^path = "/usr/share/puppetcam/onnx/default_avatar.pcav"' "$STAGE/puppetcam.toml" \
  || { echo "package: puppetcam.example.toml: avatar path line not found" >&2; exit 1; }

if [ "$BUILD" = 1 ]; then
  cargo build --release --locked
fi
# --strip: the release profile keeps line tables for backtraces (debug = 1); the package does not.
cargo deb --no-build --strip >/dev/null
DEB="$(ls -t target/debian/puppetcam_*.deb | head -n1)"
echo "package: $(du -h "$DEB" | cut -f1) $DEB"
echo "$DEB"
