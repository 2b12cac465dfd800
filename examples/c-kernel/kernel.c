/*
 * A small kernel in C on top of pvops' C ABI (pvops.h, libpvops_ffi.a):
 * an entry in the library (PVH, or Xen classic PV in ring 3) calls
 * pvops_kernel_main, which brings pvops
 * up, prints the platform line, checks a few ops through the C ABI and
 * powers off with its exit code, in pvops' console protocol.
 */
#include "pvops.h"

static size_t length(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

static void print(const char *s)
{
    pvops_console_write((const uint8_t *)s, length(s));
}

static void print_u64(uint64_t v)
{
    char digits[21];
    int i = 20;
    digits[i] = 0;
    do {
        digits[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    print(&digits[i]);
}

static int passed, failed;

static void check(const char *name, int ok, const char *why)
{
    print("test ");
    print(name);
    if (ok) {
        print(" ... ok\n");
        passed++;
    } else {
        print(" ... FAILED: ");
        print(why);
        print("\n");
        failed++;
    }
}

static int irq_roundtrip(void)
{
    uint64_t outer, inner;
    if (pvops_irq_enable() != PVOPS_OK || pvops_irq_save(&outer) != PVOPS_OK)
        return 0;
    if (pvops_irq_save(&inner) != PVOPS_OK)
        return 0;
    /* IF (bit 9) was set when saved first, clear the second time. */
    int ok = (outer & (1u << 9)) && !(inner & (1u << 9));
    pvops_irq_restore(inner);
    pvops_irq_restore(outer);
    return ok;
}

static int clock_advances(void)
{
    uint64_t a, b;
    if (pvops_sched_clock(&a) != PVOPS_OK)
        return 0;
    for (int i = 0; i < 1000000; i++) {
        if (pvops_sched_clock(&b) != PVOPS_OK)
            return 0;
        if (b > a)
            return 1;
    }
    return 0;
}

static int cpuid_vendor_printable(void)
{
    uint32_t r[4];
    if (pvops_cpuid(0, 0, r) != PVOPS_OK || r[0] < 1)
        return 0;
    uint32_t words[3] = { r[1], r[3], r[2] };
    for (int w = 0; w < 3; w++)
        for (int b = 0; b < 4; b++) {
            unsigned char c = (unsigned char)(words[w] >> (8 * b));
            if (c < 0x21 || c > 0x7e)
                return 0;
        }
    return 1;
}

static void finish(int code)
{
    print("pvops: exit code=");
    print_u64((uint64_t)code);
    print("\n");
    pvops_shutdown((uint8_t)code);
    for (;;)
        ;
}

void pvops_kernel_main(uint64_t protocol, uint64_t info)
{
    int r = pvops_init(protocol, info);
    if (r != PVOPS_OK && r != PVOPS_EBOOTINFO)
        for (;;)
            ; /* no backend: no console, nothing to report with */
    char id[256];
    print("pvops: ");
    print(pvops_identity((uint8_t *)id, sizeof id) >= 0 ? id : "platform=?");
    print("\n");
    if (r == PVOPS_EBOOTINFO) {
        print("pvops: error: malformed start info\n");
        finish(2);
    }

    check("second_init_refused", pvops_init(protocol, info) == PVOPS_EALREADY,
          "pvops_init accepted a second install");
    check("irq_save_restore", irq_roundtrip(), "flags did not round-trip");
    check("sched_clock_advances", clock_advances(), "clock stuck or refused");
    check("cpuid_vendor", cpuid_vendor_printable(), "vendor string not printable");
    check("null_pointer_rejected", pvops_sched_clock(0) == PVOPS_EINVAL,
          "a NULL out-pointer was not refused");
    uint64_t secs;
    uint32_t nsecs;
    check("wall_clock_after_2024",
          pvops_wall_clock(&secs, &nsecs) == PVOPS_OK && secs > 1704067200u && nsecs < 1000000000u,
          "wall clock before 2024 or refused");

    print(failed ? "test result: FAILED. " : "test result: ok. ");
    print_u64((uint64_t)passed);
    print(" passed; ");
    print_u64((uint64_t)failed);
    print(" failed\n");
    finish(failed ? 1 : 0);
}
