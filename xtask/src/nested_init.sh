#!/bin/sh
# /init of kvm-nested's outer Linux (Debian's kernel under QEMU TCG -cpu max,
# an emulated AMD CPU with SVM). Written by xtask (xtask/src/nested.rs packs
# it into the base initramfs); inspired by ../shared/recipes/kvm-nested/init.
#
# Loads Linux's real KVM (irqbypass, kvm, ccp, kvm-amd), then runs every
# inner configuration the harness put in /etc/nested/ (per-run archive) one
# after another, each an inner QEMU on /dev/kvm with the guest kernel
# /guest, and powers off. Marker lines (all start with `kvm-nested: `) let
# the harness cut the console into one section per inner run:
#
#   kvm-nested: init uptime=<s> linux=<release> cpus=<n>
#   kvm-nested: ready uptime=<s>                 (/dev/kvm present)
#   kvm-nested: begin run=<i> name=<name> uptime=<s>
#     ... the inner QEMU's output (the guest's console, QEMU's errors) ...
#   kvm-nested: end run=<i> status=<rc> killed=<yes|no> uptime=<s>
#   kvm-nested: done runs=<n> uptime=<s>
#   kvm-nested: FAIL: <reason>                   (then power-off)
#
# /etc/nested/run-<i>.args: the inner QEMU's arguments, one a line;
# run-<i>.name: the configuration's name; run-<i>.limit: seconds after which
# the inner QEMU is killed (killed=yes; the harness fails that run).
#
# Live migration (xtask/src/migrate.rs): with run-<i>.destination, a second
# inner QEMU (the destination, -incoming, its console in a file, its QMP on
# /dev/ttyS2) starts before the source; the harness migrates over the two
# QMP ports. After the source ends (QMP quit), the section goes on with
#   migrate| source status=<rc>
#   migrate| dest| <each line of the destination's console>
#   migrate| dest status=<rc>
# and the end line carries the destination's status.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
export LD_LIBRARY_PATH=/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu:/lib64

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1

say() { echo "kvm-nested: $*"; }
uptime_s() { read -r u _ </proc/uptime; echo "$u"; }
finish() {
    sync
    poweroff -f
    sleep 30
}
fail() {
    say "FAIL: $*"
    finish
}

say "init uptime=$(uptime_s) linux=$(uname -r) cpus=$(nproc)"

for m in irqbypass kvm ccp kvm-amd; do
    out=$(insmod "/lib/modules/$m.ko" 2>&1) || {
        echo "$out"
        dmesg | tail -n 20
        fail "insmod $m failed: $out"
    }
done
if [ ! -c /dev/kvm ]; then
    dmesg | grep -i -E 'kvm|svm' | tail -n 20
    fail "/dev/kvm is missing after loading kvm-amd (does the outer CPU offer SVM? the outer QEMU needs -cpu max)"
fi
[ -f /guest ] || fail "no /guest kernel in the initramfs (the harness's per-run archive is missing)"
[ -c /dev/ttyS1 ] || fail "no /dev/ttyS1 (the outer machine's second serial port, for the inner QMP)"
ver=$(qemu-system-x86_64 --version 2>&1 | head -n 1)
case $ver in
QEMU*) ;;
*) fail "the inner QEMU does not run: $ver" ;;
esac
say "ready uptime=$(uptime_s) qemu=\"$ver\""

i=0
for args in /etc/nested/run-*.args; do
    [ -f "$args" ] || fail "no inner configuration in /etc/nested"
    base=${args%.args}
    name=$(cat "$base.name")
    limit=$(cat "$base.limit")
    i=$((i + 1))
    rm -f /tmp/killed
    say "begin run=$i name=$name uptime=$(uptime_s)"
    dest=
    if [ -f "$base.destination" ]; then
        set --
        while IFS= read -r a || [ -n "$a" ]; do set -- "$@" "$a"; done <"$base.destination"
        rm -f /tmp/migrate-dest.console /tmp/migrate.sock
        qemu-system-x86_64 "$@" </dev/null &
        dest=$!
    fi
    set --
    while IFS= read -r a || [ -n "$a" ]; do set -- "$@" "$a"; done <"$args"
    qemu-system-x86_64 "$@" </dev/null &
    pid=$!
    # The watchdog: kills inner QEMUs that outlive their bound, and says so.
    (
        sleep "$limit"
        for p in $pid $dest; do
            kill -0 "$p" 2>/dev/null && : >/tmp/killed && kill -9 "$p"
        done
    ) &
    dog=$!
    wait "$pid"
    rc=$?
    if [ -n "$dest" ]; then
        echo "migrate| source status=$rc"
        # Not ended by QMP quit (status 0): the guest ended on the source,
        # or QEMU failed; the destination would wait for it until its bound.
        [ "$rc" = 0 ] || kill -9 "$dest" 2>/dev/null
        wait "$dest"
        rc=$?
        while IFS= read -r l || [ -n "$l" ]; do
            echo "migrate| dest| $l"
        done </tmp/migrate-dest.console
        echo "migrate| dest status=$rc"
    fi
    kill "$dog" 2>/dev/null
    killed=no
    [ -f /tmp/killed ] && killed=yes
    say "end run=$i status=$rc killed=$killed uptime=$(uptime_s)"
done
say "done runs=$i uptime=$(uptime_s)"
finish
