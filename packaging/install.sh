#!/bin/sh
# Installs wanreact into DESTDIR (default: /) the way the Debian package
# lays it out. Usage: packaging/install.sh BINARY [DESTDIR]
#   BINARY   a built wanreact (make build: bin/wanreact)
#   DESTDIR  staging root for packagers; omit to install on this machine
# Existing files under /etc are kept (only new ones are added), so running it
# again upgrades without touching local changes.
set -eu
umask 022
bin=${1:?usage: install.sh BINARY [DESTDIR]}
dest=${2:-}
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")

inst() { # mode src dst
	mkdir -p "$(dirname "$3")"
	cp "$2" "$3.tmp.$$" && chmod "$1" "$3.tmp.$$" && mv -f "$3.tmp.$$" "$3"
}
conf() { # mode src dst: never overwrite the administrator's file
	if [ -e "$3" ]; then
		echo "keeping $3"
	else
		inst "$@"
	fi
}

inst 0755 "$bin" "$dest/usr/sbin/wanreact"
inst 0644 "$here/systemd/wanreact.service" "$dest/lib/systemd/system/wanreact.service"
conf 0755 "$here/sysv/wanreact" "$dest/etc/init.d/wanreact"
conf 0644 "$here/sysv/wanreact.default" "$dest/etc/default/wanreact"
mkdir -p "$dest/etc/wanreact/hooks.d"
chmod 0755 "$dest/etc/wanreact" "$dest/etc/wanreact/hooks.d"
doc="$dest/usr/share/doc/wanreact"
mkdir -p "$doc/openrc"
for f in "$top"/docs/*.md; do
	[ -e "$f" ] && inst 0644 "$f" "$doc/$(basename "$f")"
done
[ -e "$top/README.md" ] && inst 0644 "$top/README.md" "$doc/README.md"
inst 0644 "$top/config/testdata/example.yaml" "$doc/wanreact.yaml.example"
inst 0644 "$here/openrc/wanreact" "$doc/openrc/wanreact.initd"
inst 0644 "$here/openrc/wanreact.confd" "$doc/openrc/wanreact.confd"
if [ -z "$dest" ] && [ -d /run/systemd/system ]; then
	systemctl daemon-reload
fi
echo "installed wanreact into ${dest:-/}"
if [ ! -e "$dest/etc/wanreact/wanreact.yaml" ]; then
	echo "next: write /etc/wanreact/wanreact.yaml (example: /usr/share/doc/wanreact/wanreact.yaml.example),"
	echo "      check it with 'wanreact check -c /etc/wanreact/wanreact.yaml', then enable the service"
fi
