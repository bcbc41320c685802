#!/bin/sh
# /init of the v4l2loopback test VM: load the modules, run the round trip, print one
# PUPPETCAM-VM: PASS/FAIL line for run-v4l2-test.sh to grep, and power off.
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp

result=FAIL
reason=""
for m in $(cat /modules/order); do
    insmod "/modules/$m.ko" || reason="insmod $m failed"
done
if [ -z "$reason" ]; then
    insmod /modules/v4l2loopback.ko exclusive_caps=1 card_label=puppetcam video_nr=10 \
        || reason="insmod v4l2loopback failed"
fi
if [ -z "$reason" ]; then
    i=0
    while [ ! -e /dev/video10 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    [ -e /dev/video10 ] || reason="/dev/video10 did not appear"
fi
if [ -z "$reason" ]; then
    # Extra arguments can be passed from the host as puppetcam.args=a,b,c on the kernel line.
    args=$(sed -n 's/.*puppetcam\.args=\([^ ]*\).*/\1/p' /proc/cmdline | tr ',' ' ')
    if RUST_BACKTRACE=1 /roundtrip /dev/video10 $args; then
        result=PASS
    else
        reason="roundtrip exited $?"
    fi
fi
[ "$result" = PASS ] || dmesg | tail -20
echo "PUPPETCAM-VM: $result $reason"
poweroff -f
