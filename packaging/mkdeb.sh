#!/bin/sh
# Builds a Debian package from a built binary, with the layout of install.sh.
# Usage: packaging/mkdeb.sh BINARY VERSION DEBIAN_ARCH OUTDIR
# Needs dpkg-deb only (no debhelper), so it runs on any Debian-ish builder.
set -eu
bin=${1:?usage: mkdeb.sh BINARY VERSION DEBIAN_ARCH OUTDIR}
version=${2:?version}
arch=${3:?debian architecture (amd64, arm64, armhf, armel, mipsel)}
out=${4:?output directory}
here=$(cd "$(dirname "$0")" && pwd)

# Debian versions must start with a digit and use [A-Za-z0-9.+~]; git
# describe's "v1.2-3-gabc-dirty" becomes "1.2+3+gabc+dirty".
debver=$(printf '%s' "$version" | sed -e 's/^v//' -e 's/[^A-Za-z0-9.+~]/+/g')
case "$debver" in
[0-9]*) ;;
*) debver="0~git$debver" ;;
esac

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
"$here/install.sh" "$bin" "$stage/root" >/dev/null
mkdir -p "$stage/root/DEBIAN"
size=$(du -sk "$stage/root" | cut -f1)
sed -e "s/@VERSION@/$debver/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" \
	"$here/debian/control.in" >"$stage/root/DEBIAN/control"
cp "$here/debian/conffiles" "$stage/root/DEBIAN/conffiles"
for s in postinst prerm postrm; do
	cp "$here/debian/$s" "$stage/root/DEBIAN/$s"
	chmod 0755 "$stage/root/DEBIAN/$s"
done
chmod 0644 "$stage/root/DEBIAN/control" "$stage/root/DEBIAN/conffiles"
mkdir -p "$out"
deb="$out/wanreact_${debver}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$stage/root" "$deb" >/dev/null
echo "$deb"
