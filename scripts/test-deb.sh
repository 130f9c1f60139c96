#!/usr/bin/env bash
# Install test of the amd64 package in a fresh Debian 12 root (make test-deb).
#
#   scripts/test-deb.sh [DEB]     default build/deb/hidiffd_<version>_amd64.deb
#                                 (built first when missing: make deb)
#
# 1. A fresh root: debootstrap --variant=minbase bookworm (kept as
#    build/test-deb/bookworm-minbase.tar.gz and unpacked anew each run;
#    delete it to start from the mirror again).
# 2. apt-get install ./hidiffd.deb in it (chroot): dependencies come from the
#    mirror, maintainer scripts run as on a real machine, with no systemd
#    running, so they must neither fail nor start anything.
# 3. Checks from the installed files alone: the hidiffd user and groups, the
#    spool folders with their owners and modes, the conffile, the unit not
#    enabled and no process started in the root, `hidiffd doctor --config
#    /etc/hidiffd/config.toml` and a one-shot `hidiffd deblur`, both run as
#    user hidiffd, and `systemd-analyze verify` on the installed unit.
# 4. A local edit of /etc/hidiffd/config.toml survives a reinstall (upgrade
#    path); remove keeps the conffile; purge leaves no file named hidiffd
#    (the system user stays, as Debian policy has it); a second install whose
#    spool holds a frame keeps that frame on purge.
#
# Needs root, debootstrap and a Debian mirror (HIDIFFD_DEB_MIRROR, default
# deb.debian.org), and about 5 minutes (15 the first time). Without root or
# debootstrap it says "skipped" and exits 0, unless HIDIFFD_TEST_DEB=require.
# Not part of `make test` (CI): it downloads packages and takes minutes.
set -euo pipefail
root_dir="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root_dir"

skip() {
  if [ "${HIDIFFD_TEST_DEB:-}" = require ]; then echo "test-deb: FAIL: $*" >&2; exit 1; fi
  echo "test-deb: skipped: $*"; exit 0
}
[ "$(id -u)" = 0 ] || skip "needs root (chroot, mount)"
command -v debootstrap >/dev/null || skip "needs debootstrap (apt-get install debootstrap)"

deb="${1:-}"
if [ -z "$deb" ]; then
  deb="build/deb/hidiffd_$(scripts/deb-version.sh)_amd64.deb"
  [ -f "$deb" ] || scripts/build-deb.sh amd64
fi
[ -f "$deb" ] || { echo "test-deb: no package $deb" >&2; exit 1; }
mirror="${HIDIFFD_DEB_MIRROR:-http://deb.debian.org/debian}"
photo="${HIDIFFD_PHOTOS:-$root_dir/../shared/data/photos}/bsds500/val/101085.jpg"
PY="${PYTHON:-/usr/bin/python3}"

work="$root_dir/build/test-deb"
base="$work/bookworm-minbase.tar.gz"
R="$work/root"
mkdir -p "$work"

cleanup() {
  if mountpoint -q "$R/proc"; then umount "$R/proc" || umount -l "$R/proc"; fi
}
trap cleanup EXIT
step() { echo "test-deb: $*"; }
fail() { echo "test-deb: FAIL: $*" >&2; exit 1; }
in_root() { chroot "$R" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 HOME=/root "$@"; }

if [ ! -f "$base" ]; then
  step "debootstrap --variant=minbase bookworm from $mirror (once; cached as ${base#"$root_dir"/})"
  rm -rf --one-file-system "$work/boot"
  debootstrap --variant=minbase bookworm "$work/boot" "$mirror" > "$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; fail "debootstrap (log: $work/debootstrap.log)"; }
  tar -C "$work/boot" -czf "$base.tmp" . && mv "$base.tmp" "$base"
  rm -rf --one-file-system "$work/boot"
fi

cleanup
rm -rf --one-file-system "$R"
mkdir -p "$R"
tar -C "$R" -xzf "$base"
cp /etc/resolv.conf "$R/etc/resolv.conf"
mount -t proc proc "$R/proc"
listing() { (cd "$R" && find . -xdev \( -path ./proc -o -path ./tmp -o -path ./var/cache -o -path ./var/log \) -prune -o -print | sort); }
[ ! -e "$R/run/systemd/system" ] || fail "the fresh root says systemd is running"

step "install $(basename "$deb") with apt (dependencies from the mirror)"
cp "$deb" "$R/tmp/hidiffd.deb"
in_root apt-get update -qq > "$work/apt.log" 2>&1 || { tail "$work/apt.log" >&2; fail "apt-get update"; }
if ! in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends /tmp/hidiffd.deb >> "$work/apt.log" 2>&1; then
  tail -30 "$work/apt.log" >&2; fail "apt-get install (log: $work/apt.log)"
fi
grep -E "^(Setting up|Unpacking) hidiffd" "$work/apt.log" | sed 's/^/  /'
in_root dpkg-query -W -f='  installed ${Package} ${Version} ${Architecture}: ${db:Status-Abbrev}\n' hidiffd

step "user, groups, folders, conffile, unit state"
in_root getent passwd hidiffd | grep -q ':/var/lib/hidiffd:' || fail "no system user hidiffd with home /var/lib/hidiffd"
uid="$(in_root id -u hidiffd)"; [ "$uid" -lt 1000 ] || fail "hidiffd is not a system user (uid $uid)"
for g in hidiffd video render; do
  in_root id -nG hidiffd | tr ' ' '\n' | grep -qx "$g" || fail "hidiffd is not in group $g"
done
echo "  user: $(in_root id hidiffd)"
want="/var/lib/hidiffd 750 hidiffd:hidiffd
/var/lib/hidiffd/spool 750 hidiffd:hidiffd
/var/lib/hidiffd/spool/inbox 2770 hidiffd:hidiffd
/var/lib/hidiffd/spool/work 750 hidiffd:hidiffd
/var/lib/hidiffd/spool/out 2750 hidiffd:hidiffd
/var/lib/hidiffd/spool/done 750 hidiffd:hidiffd
/var/lib/hidiffd/spool/failed 750 hidiffd:hidiffd"
got="$(while read -r d _; do in_root stat -c '%n %a %U:%G' "$d"; done <<<"$want")"
[ "$got" = "$want" ] || { diff <(echo "$want") <(echo "$got") >&2 || true; fail "spool folders"; }
echo "  folders: /var/lib/hidiffd/spool/{inbox,work,out,done,failed} with the tmpfiles.d modes"
in_root dpkg-query -W -f='${Conffiles}\n' hidiffd | grep -q '/etc/hidiffd/config.toml' || fail "config.toml is not a conffile"
echo "  conffile: /etc/hidiffd/config.toml"
[ ! -e "$R/etc/systemd/system/multi-user.target.wants/hidiffd.service" ] || fail "the service was enabled by the package"
echo "  hidiffd.service: installed, not enabled (the admin runs systemctl enable --now hidiffd)"
for p in /proc/[0-9]*; do
  if [ "$(readlink "$p/root" 2>/dev/null)" = "$R" ]; then fail "a process runs in the root after install: $(cat "$p/cmdline" | tr '\0' ' ')"; fi
done
echo "  no process started in the root"

step "hidiffd doctor --config /etc/hidiffd/config.toml as user hidiffd (installed files only)"
in_root runuser -u hidiffd -- hidiffd doctor --config /etc/hidiffd/config.toml > "$work/doctor.txt" 2>&1 \
  || { cat "$work/doctor.txt" >&2; fail "doctor"; }
grep -E "config.toml loads|onnxruntime: library|loads with ONNX Runtime|prior.onnx|spool/inbox|problems" "$work/doctor.txt"
grep -q "library /usr/lib/hidiffd/libonnxruntime.so.1" "$work/doctor.txt" || fail "doctor did not find /usr/lib/hidiffd/libonnxruntime.so.1"

step "hidiffd deblur as user hidiffd (shipped model found from /usr/bin)"
"$PY" - "$photo" "$R/tmp/frame.png" <<'PYEOF'
import sys
from PIL import Image
im = Image.open(sys.argv[1]).convert("RGB")
im.crop((0, 0, 192, 128)).save(sys.argv[2])
PYEOF
chmod 0644 "$R/tmp/frame.png"
in_root runuser -u hidiffd -- sh -c 'cd /tmp && hidiffd deblur --out /tmp/deblurred /tmp/frame.png' > "$work/deblur.json" 2> "$work/deblur.err" \
  || { cat "$work/deblur.err" >&2; fail "deblur"; }
sed 's/^/  /' "$work/deblur.json"
"$PY" - "$R/tmp/frame.png" "$R/tmp/deblurred/frame.png" <<'PYEOF' || fail "deblur output"
import sys
import numpy as np
from PIL import Image
a = np.asarray(Image.open(sys.argv[1]).convert("RGB"), dtype=np.float64)
b = np.asarray(Image.open(sys.argv[2]).convert("RGB"), dtype=np.float64)
assert a.shape == b.shape, (a.shape, b.shape)
mse = float(np.mean((a - b) ** 2))
assert 0 < mse < 255 ** 2 / 10 ** 1.5, mse   # changed, and still the same picture (PSNR > 15 dB)
print(f"  output {b.shape[1]}x{b.shape[0]} PNG, PSNR to its input {10 * np.log10(255 ** 2 / mse):.2f} dB")
PYEOF

step "systemd-analyze verify /usr/lib/systemd/system/hidiffd.service"
in_root systemd-analyze verify /usr/lib/systemd/system/hidiffd.service > "$work/verify.txt" 2>&1 \
  || { cat "$work/verify.txt" >&2; fail "systemd-analyze verify"; }
if [ -s "$work/verify.txt" ]; then sed 's/^/  /' "$work/verify.txt"; else echo "  no findings"; fi

step "local edit of the conffile survives a reinstall (upgrade path)"
echo "# local edit by test-deb" >> "$R/etc/hidiffd/config.toml"
in_root env DEBIAN_FRONTEND=noninteractive dpkg -i /tmp/hidiffd.deb > "$work/reinstall.log" 2>&1 || { cat "$work/reinstall.log" >&2; fail "reinstall"; }
grep -q "local edit by test-deb" "$R/etc/hidiffd/config.toml" || fail "reinstall overwrote the edited conffile"
echo "  kept"

step "remove, then purge"
in_root dpkg -r hidiffd > "$work/remove.log" 2>&1 || { cat "$work/remove.log" >&2; fail "dpkg -r"; }
[ ! -e "$R/usr/bin/hidiffd" ] || fail "remove left /usr/bin/hidiffd"
[ -f "$R/etc/hidiffd/config.toml" ] || fail "remove deleted the conffile (only purge should)"
echo "  remove: files gone, /etc/hidiffd/config.toml kept"
in_root dpkg -P hidiffd > "$work/purge.log" 2>&1 || { cat "$work/purge.log" >&2; fail "dpkg -P"; }
left="$(listing | grep -i hidiffd || true)"
[ -z "$left" ] || { echo "$left" >&2; fail "purge left files named hidiffd"; }
in_root getent passwd hidiffd >/dev/null || fail "purge removed the system user (Debian keeps it)"
echo "  purge: no file or folder named hidiffd left; kept: user and group hidiffd (Debian policy)"

step "purge keeps frames still in the spool"
in_root dpkg -i /tmp/hidiffd.deb > "$work/install2.log" 2>&1 || { cat "$work/install2.log" >&2; fail "second install"; }
cp "$R/tmp/frame.png" "$R/var/lib/hidiffd/spool/done/frame.png"
before="$(listing)"
in_root dpkg -P hidiffd > "$work/purge2.log" 2>&1 || { cat "$work/purge2.log" >&2; fail "second purge"; }
grep "hidiffd: kept" "$work/purge2.log" | sed 's/^/  /' || true
[ -f "$R/var/lib/hidiffd/spool/done/frame.png" ] || fail "purge deleted a frame"
echo "  left after purge:"
comm -12 <(echo "$before") <(listing) | grep -i hidiffd | sed 's/^/    /'

echo "test-deb: PASS ($(basename "$deb"))"
