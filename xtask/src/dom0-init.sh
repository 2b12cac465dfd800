#!/bin/sh
# /init of the dom0 initramfs that xtask builds (xtask/src/domu.rs), run by
# busybox sh in Debian's Linux as a classic PV dom0 under Xen.
#
# Brings up Xen's toolstack (xenfs, xenstored, xen-init-dom0, xenconsoled),
# then makes one domU per word of /guest/guests ("<kind>:<name>:<action>",
# kind pvh, pv, pvh-high (the higher-half PVH example kernel,
# /guest/<name>.elf), hvm, or hvmiso: an HVM guest booting the CD
# /guest/<name>.iso; the kernel is /guest/kernel, its command line
# /guest/<name>.cmdline), one after another: `xl create -p`, `xl unpause`,
# (action "[save+]shutdown" or "[save+]reboot": once the guest's console
# says it waits for a save and restore, `xl save` it to /tmp and `xl
# restore` it; once it says it waits for a shutdown request, `xl shutdown`
# or `xl reboot` it), wait until it shuts down or
# crashes (or guest_timeout= seconds pass),
# then print its console between marker lines and one result line:
#
#   XENDOMU-CONSOLE-BEGIN name=<name>
#   ... the guest's own console (xenconsoled's log of its PV console) ...
#   XENDOMU-CONSOLE-END name=<name>
#   XENDOMU-RESULT name=<name> kind=<kind> state=<shutdown|crashed|timeout|gone|create-failed> reason=<poweroff|reboot|crash|...|-> run_s=<s>
#
# and at the end `XENDOMU-DONE`, then reboots dom0: Xen restarts the
# machine and QEMU's -no-reboot makes QEMU exit, so the run ends by itself.
# Derived from ../shared/recipes/xen-domu/dom0-init.sh.

export PATH=/usr/lib/xen-4.17/bin:/usr/sbin:/usr/bin:/sbin:/bin
export LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu

/bin/busybox mkdir -p /proc /sys /dev /run /tmp /sbin /usr/bin /usr/sbin
/bin/busybox --install -s

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp

up() { cut -d' ' -f1 /proc/uptime; }
say() { echo "[dom0 $(up)] $*"; }
nap() { sleep 0.2 2>/dev/null || sleep 1; }

say "XENDOMU: dom0 /init started"

GUEST_TIMEOUT=180
for w in $(cat /proc/cmdline); do
    case "$w" in
        guest_timeout=*) GUEST_TIMEOUT=${w#guest_timeout=} ;;
    esac
done

finish() {
    say "XENDOMU-DONE: $*"
    sync
    # SCHEDOP_shutdown(reboot) from dom0: Xen resets the machine and
    # QEMU's -no-reboot turns that into QEMU's exit.
    reboot -f
    sleep 5
    echo b > /proc/sysrq-trigger
}

for m in xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xenfs; do
    insmod /lib/modules/xen/$m.ko || say "insmod $m failed"
done
mount -t xenfs xenfs /proc/xen || finish "mounting xenfs failed"

mkdir -p /run/xen /run/xenstored /var/lib/xen /var/lib/xenstored \
    /var/log/xen/console /var/lib/xen/dump /etc/xen

xenstored --pid-file=/run/xen/xenstored.pid || finish "xenstored failed"
i=0
while ! xenstore-read /local >/dev/null 2>&1 && ! xenstore-ls / >/dev/null 2>&1; do
    i=$((i + 1)); [ $i -gt 300 ] && finish "xenstored did not come up"
    nap
done
xen-init-dom0 >/dev/null || say "xen-init-dom0 failed"
xenconsoled --log=guest --log-dir=/var/log/xen/console --pid-file=/run/xen/xenconsoled.pid \
    || say "xenconsoled failed"
say "XENDOMU: dom0 userspace ready (xenstored, xen-init-dom0, xenconsoled up)"
xl dmesg -c >/dev/null 2>&1

write_config() { # kind name cmdline-file cfgfile
    kind=$1; name=$2; cmdf=$3; cfg=$4
    {
        echo "name = \"$name\""
        echo "memory = 64"
        echo "vcpus = 2"
        echo "on_poweroff = \"preserve\""
        echo "on_reboot = \"preserve\""
        echo "on_crash = \"preserve\""
        case "$kind" in
            pvh|pv)
                echo "type = \"$kind\""
                echo "kernel = \"/guest/kernel\""
                [ -s "$cmdf" ] && echo "cmdline = \"$(cat "$cmdf")\""
                ;;
            pvh-high)
                # Another kernel: the higher-half PVH example.
                echo 'type = "pvh"'
                echo "kernel = \"/guest/$name.elf\""
                [ -s "$cmdf" ] && echo "cmdline = \"$(cat "$cmdf")\""
                ;;
            hvmiso|hvmiso-viridian)
                # As people's HVM guests boot: hvmloader and SeaBIOS boot
                # the guest's CD (GRUB, its grub.cfg holding the command line).
                echo 'type = "hvm"'
                # Xen's Hyper-V emulation: its leaves first, Xen's behind.
                [ "$kind" = hvmiso-viridian ] && echo 'viridian = 1'
                # Apart from dom0 (pinned to CPU 0): see XEN_CMDLINE in domu.rs.
                echo 'cpus = "1"'
                echo "disk = [ \"format=raw, vdev=hdc, access=ro, devtype=cdrom, target=/guest/$name.iso\" ]"
                echo 'boot = "d"'
                echo 'device_model_version = "qemu-xen"'
                echo 'device_model_override = "/usr/libexec/xen-qemu-system-i386"'
                echo "serial = \"file:/var/log/xen/console/$name-serial.log\""
                echo 'vga = "none"'
                echo 'vnc = 0'
                echo 'sdl = 0'
                echo 'nographic = 1'
                ;;
            hvm)
                # libxl loads the kernel in place of hvmloader and enters
                # it through its PVH-style entry; libxl refuses cmdline=
                # without kernel=, so the guest gets no command line.
                echo 'type = "hvm"'
                echo 'firmware_override = "/guest/kernel"'
                echo 'device_model_version = "qemu-xen"'
                echo 'device_model_override = "/usr/libexec/xen-qemu-system-i386"'
                echo "serial = \"file:/var/log/xen/console/$name-serial.log\""
                echo 'vga = "none"'
                echo 'vnc = 0'
                echo 'sdl = 0'
                echo 'nographic = 1'
                ;;
        esac
    } > "$cfg"
}

elapsed_since() { awk -v a="$1" -v b="$(up)" 'BEGIN { printf "%.1f", b - a }'; }

run_guest() { # kind name action
    kind=$1; name=$2; action=$3
    case "$action" in *shutdown*) ctl=shutdown ;; *reboot*) ctl=reboot ;; *) ctl=none ;; esac
    case "$action" in save*) save=yes ;; *) save=no ;; esac
    cfg=/etc/xen/$name.cfg
    log=/var/log/xen/console/guest-$name.log
    write_config "$kind" "$name" "/guest/$name.cmdline" "$cfg"
    say "XENDOMU: xl create -p $cfg ($kind)"
    t0=$(up)
    if ! xl create -p "$cfg" 2>&1; then
        for f in /var/log/xen/xl-$name.log /var/log/xen/qemu-dm-$name.log; do
            [ -f "$f" ] && { echo "---- $f ----"; cat "$f"; }
        done
        xl dmesg -c
        echo "XENDOMU-RESULT name=$name kind=$kind state=create-failed reason=- run_s=0"
        xl destroy "$name" >/dev/null 2>&1
        return
    fi
    t_created=$(up)
    xl unpause "$name"
    say "XENDOMU: $name unpaused ($(elapsed_since "$t0") s to create)"
    state=running; reason=-
    asked=no
    while :; do
        if [ $save = yes ] && grep -q 'waiting for a save and restore' "$log" 2>/dev/null; then
            say "XENDOMU: xl save $name /tmp/$name.save"
            if ! xl save "$name" "/tmp/$name.save" 2>&1 && xl list "$name" >/dev/null 2>&1; then
                # Seen once here: xl itself segfaulting before it asked the
                # guest to suspend (the guest runs on): try once more.
                say "XENDOMU: xl save failed, the domain still runs: once more"
                nap
                xl save "$name" "/tmp/$name.save" 2>&1
            fi
            say "XENDOMU: saved ($(du -k "/tmp/$name.save" 2>/dev/null | cut -f1) KiB); xl restore"
            xl restore "/tmp/$name.save" 2>&1
            say "XENDOMU: restored"
            rm -f "/tmp/$name.save"
            save=done
        fi
        if [ "$ctl" != none ] && [ $asked = no ] &&
           grep -q 'waiting for a shutdown request' "$log" 2>/dev/null; then
            say "XENDOMU: xl $ctl $name"
            xl "$ctl" "$name" 2>&1
            asked=yes
        fi
        line=$(xl list -v "$name" 2>/dev/null | awk 'NR == 2')
        if [ -z "$line" ]; then state=gone; break; fi
        st=$(echo "$line" | awk '{ print $5 }')
        case "$st" in
            *c*) state=crashed; reason=$(echo "$line" | awk '{ print $8 }'); break ;;
            *s*) state=shutdown; reason=$(echo "$line" | awk '{ print $8 }'); break ;;
            *d*) state=dying; break ;;
        esac
        if [ "$(awk -v a="$t_created" -v b="$(up)" -v l="$GUEST_TIMEOUT" 'BEGIN { print (b - a > l) }')" = 1 ]; then
            state=timeout; break
        fi
        nap
    done
    run_s=$(elapsed_since "$t_created")
    case "$reason" in
        0) reason=poweroff ;; 1) reason=reboot ;; 2) reason=suspend ;;
        3) reason=crash ;; 4) reason=watchdog ;; 5) reason=soft_reset ;;
    esac
    say "XENDOMU: $name state=$state reason=$reason after $run_s s"
    # Let xenconsoled drain the ring into the log: the kernel's last line
    # is its exit code; give up waiting after about two seconds.
    i=0
    while [ $i -lt 10 ] && ! grep -q 'pvops: exit code=' "$log" 2>/dev/null; do
        i=$((i + 1)); nap
    done
    echo "XENDOMU-CONSOLE-BEGIN name=$name"
    [ -f "$log" ] && cat "$log"
    echo "XENDOMU-CONSOLE-END name=$name"
    if [ "$kind" = hvm ] || [ "$kind" = hvmiso ] || [ "$kind" = hvmiso-viridian ]; then
        echo "---- emulated COM1 of $name ----"
        cat /var/log/xen/console/$name-serial.log 2>/dev/null
    fi
    echo "---- xen log during $name (xl dmesg -c) ----"
    xl dmesg -c | grep -v ' save: \| restore: '
    xl destroy "$name" >/dev/null 2>&1
    echo "XENDOMU-RESULT name=$name kind=$kind state=$state reason=$reason run_s=$run_s"
}

for g in $(cat /guest/guests); do
    # shellcheck disable=SC2046
    run_guest $(echo "$g" | tr ':' ' ')
done
finish "all guests done"
