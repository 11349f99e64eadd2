#!/bin/bash
# Installs the Debian packages the tests and the demo need, only when missing.
# The Wi-Fi VM test installs its own (qemu, a kernel, hostapd...) the same way.
set -eu
need="iptables dnsmasq-base isc-dhcp-server iproute2 kmod"
miss=""
for p in $need; do dpkg -s "$p" >/dev/null 2>&1 || miss="$miss $p"; done
if [ -n "$miss" ]; then
  echo "deps: installing$miss"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $miss >/dev/null
fi
