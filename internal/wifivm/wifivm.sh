#!/bin/bash
# wifivm.sh: boot a small qemu VM (TCG, no KVM needed) with mac80211_hwsim, an access point
# (hostapd on wlan0, 192.0.2.1/24, in its own network namespace so that station traffic really
# crosses the simulated air) and an associated station (wpa_supplicant on wlan1, 192.0.2.2/24),
# then run a guest script as root under busybox sh.
#
# usage: wifivm.sh GUEST_SCRIPT [EXTRA_FILE...]   (extra files land in /x/ in the guest)
# Guest helpers: ap-stop (hostapd exits; the station is deauthenticated), ap-start (it
# reassociates, ~3.5 s including the scan), ap-txpower MBM (ap-txpower 100 = 1 dBm: the
# station's signal drops from about -30 to about -49 dBm).
# The console goes to stdout; the exit status is the guest script's (1 if it never finished).
# WIFIVM_TIMEOUT (seconds, default 120) bounds the whole VM run.
#
# Adapted from the project's shared recipe; the Go wrapper is wifivm.go (package wifivm).
set -u
GS=$1; shift
need="qemu-system-x86 linux-image-amd64 busybox-static hostapd wpasupplicant iw cpio"
miss=""
for p in $need; do dpkg -s "$p" >/dev/null 2>&1 || miss="$miss $p"; done
if [ -n "$miss" ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $miss) >/dev/null 2>&1 ||
    { echo "WIFIVM-FAIL: cannot install$miss"; exit 1; }
fi
# The guest kernel is the newest Debian kernel that has both an image and mac80211_hwsim
# (the host's own kernel may have neither: it need not be a Debian kernel at all).
KVER=""
for k in $(ls /lib/modules 2>/dev/null | sort -V); do
  [ -e "/boot/vmlinuz-$k" ] && [ -n "$(find "/lib/modules/$k" -name 'mac80211_hwsim.ko*' | head -1)" ] && KVER=$k
done
[ -n "$KVER" ] || { echo "WIFIVM-FAIL: no kernel with mac80211_hwsim in /lib/modules and /boot"; exit 1; }
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
R=$W/root; mkdir -p $R/{bin,sbin,lib,lib64,proc,sys,dev,tmp,run,x,etc,var/run}
cp /bin/busybox $R/bin/busybox
for a in $(/bin/busybox --list); do [ -e $R/bin/$a ] || ln -s busybox $R/bin/$a; done
for m in rfkill libarc4 cfg80211 mac80211 virtio virtio_ring mac80211_hwsim; do
  f=$(find /lib/modules/$KVER -name "$m.ko*" | head -1)
  [ -n "$f" ] || { echo "WIFIVM-FAIL: module $m not found for $KVER"; exit 1; }
  case $f in *.xz) xz -dc "$f" > $R/lib/$m.ko ;; *.zst) zstd -dqc "$f" > $R/lib/$m.ko ;; *) cp "$f" $R/lib/$m.ko ;; esac
done
for b in /usr/sbin/hostapd /usr/sbin/hostapd_cli /usr/sbin/wpa_supplicant /usr/sbin/wpa_cli /usr/sbin/iw; do
  cp "$b" $R/bin/
  for l in $(ldd "$b" | grep -o '/[^ ]*'); do mkdir -p $R$(dirname $l); cp -n "$l" $R$l; done
done
for f in "$@"; do cp "$f" $R/x/ || { echo "WIFIVM-FAIL: cannot copy $f"; exit 1; }; done
cp "$GS" $R/x/guest.sh; chmod +x $R/x/*
cat > $R/etc/hostapd.conf <<'C'
interface=wlan0
driver=nl80211
ssid=wanreact-test
hw_mode=g
channel=1
ctrl_interface=/var/run/hostapd
C
cat > $R/etc/wpa.conf <<'C'
ctrl_interface=/var/run/wpa_supplicant
network={
 ssid="wanreact-test"
 key_mgmt=NONE
 scan_ssid=1
}
C
cat > $R/bin/ap-stop <<'C'
#!/bin/sh
kill $(cat /run/hostapd.pid) 2>/dev/null; sleep 0.2
C
cat > $R/bin/ap-start <<'C'
#!/bin/sh
nsenter -t $(cat /run/apns.pid) -n hostapd -B -P /run/hostapd.pid /etc/hostapd.conf >/dev/null
C
cat > $R/bin/ap-txpower <<'C'
#!/bin/sh
nsenter -t $(cat /run/apns.pid) -n iw dev wlan0 set txpower fixed "$1"
C
cat > $R/init <<'C'
#!/bin/sh
export PATH=/bin:/sbin
mount -t proc p /proc; mount -t sysfs s /sys; mount -t devtmpfs d /dev 2>/dev/null; mount -t tmpfs t /run
mkdir -p /var/run /run; ip link set lo up
for m in rfkill libarc4 cfg80211 mac80211 virtio_ring virtio; do insmod /lib/$m.ko; done
insmod /lib/mac80211_hwsim.ko radios=2
# the AP lives in its own network namespace, so station traffic really crosses the air
unshare -n sleep 100000 & echo $! > /run/apns.pid; sleep 0.2
iw phy "$(cat /sys/class/net/wlan0/phy80211/name)" set netns "$(cat /run/apns.pid)"
nsenter -t "$(cat /run/apns.pid)" -n sh -c 'ip link set lo up; ip addr add 192.0.2.1/24 dev wlan0; ip link set wlan0 up'
ap-start
wpa_supplicant -B -i wlan1 -c /etc/wpa.conf -P /run/wpa.pid >/dev/null
ip addr add 192.0.2.2/24 dev wlan1; ip link set wlan1 up
i=0; until iw dev wlan1 link | grep -q Connected; do i=$((i+1)); [ $i -gt 100 ] && break; sleep 0.1; done
iw dev wlan1 link | grep -q Connected && echo "WIFIVM: associated" || echo "WIFIVM: NOT associated"
sh /x/guest.sh; echo "WIFIVM-EXIT: $?"
poweroff -f
C
chmod +x $R/init $R/bin/ap-*
(cd $R && find . | cpio -o -H newc 2>/dev/null | gzip -1) > $W/initrd.gz
timeout "${WIFIVM_TIMEOUT:-120}" qemu-system-x86_64 -m 512 -smp 1 -nographic -no-reboot -nodefaults -serial stdio \
  -kernel /boot/vmlinuz-$KVER -initrd $W/initrd.gz -append "console=ttyS0 quiet panic=-1" > $W/console.log 2>&1
qrc=$?
tr -d '\r' < $W/console.log | grep -v '^\s*$'
[ $qrc -eq 124 ] && echo "WIFIVM-FAIL: VM timed out after ${WIFIVM_TIMEOUT:-120}s"
rc=$(tr -d '\r' < $W/console.log | sed -n 's/^WIFIVM-EXIT: \([0-9]*\).*/\1/p' | tail -1)
exit "${rc:-1}"
