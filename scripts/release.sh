#!/bin/sh
# Cross-builds static wanreact binaries into dist/ and prints their sizes;
# writes dist/SHA256SUMS and, where dpkg-deb exists, a .deb per target.
# Usage: scripts/release.sh VERSION          (make release)
# Environment:
#   TARGETS  subset of: amd64 arm64 armv7 armv5 mipsle (default: all)
#   DIST     output directory (default: dist)
#   DEB      0 to skip the Debian packages
# Exits non-zero if any build or check fails, so CI can run it as is.
set -eu
version=${1:?usage: release.sh VERSION}
cd "$(dirname "$0")/.."
GO=${GO:-go}
DIST=${DIST:-dist}
TARGETS=${TARGETS:-amd64 arm64 armv7 armv5 mipsle}
DEB=${DEB:-1}
command -v dpkg-deb >/dev/null 2>&1 || DEB=0

mkdir -p "$DIST"
rm -f "$DIST/SHA256SUMS"
built=""
for t in $TARGETS; do
	# target -> GOARCH, GOARM/GOMIPS, Debian architecture, what file(1) says
	case "$t" in
	amd64) arch=amd64 sub="" debarch=amd64 magic="x86-64" ;;
	arm64) arch=arm64 sub="" debarch=arm64 magic="ARM aarch64" ;;
	armv7) arch=arm sub="GOARM=7" debarch=armhf magic="ARM, EABI5" ;;
	armv5) arch=arm sub="GOARM=5" debarch=armel magic="ARM, EABI5" ;;
	# softfloat: the MIPS SoCs of small routers have no FPU, and the
	# kernel's FPU emulation is slow and often compiled out.
	mipsle) arch=mipsle sub="GOMIPS=softfloat" debarch=mipsel magic="MIPS, MIPS32" ;;
	*)
		echo "release: unknown target $t (amd64 arm64 armv7 armv5 mipsle)" >&2
		exit 1
		;;
	esac
	out="$DIST/wanreact-$version-linux-$t"
	echo "building $out"
	env CGO_ENABLED=0 GOOS=linux GOARCH=$arch $sub "$GO" build -trimpath \
		-ldflags "-s -w -X main.version=$version" -o "$out" ./cmd/wanreact
	if command -v file >/dev/null 2>&1; then
		desc=$(file -b "$out")
		case "$desc" in
		*"$magic"*"statically linked"*) ;;
		*)
			echo "release: $out is not a static $magic binary: $desc" >&2
			exit 1
			;;
		esac
	fi
	built="$built $out"
	if [ "$DEB" = 1 ]; then
		built="$built $(packaging/mkdeb.sh "$out" "$version" "$debarch" "$DIST")"
	fi
done

(cd "$DIST" && for f in $built; do sha256sum "$(basename "$f")"; done) >"$DIST/SHA256SUMS"
echo
printf '%-44s %10s\n' FILE BYTES
for f in $built; do
	printf '%-44s %10d\n' "$(basename "$f")" "$(wc -c <"$f")"
done
echo "checksums: $DIST/SHA256SUMS"
