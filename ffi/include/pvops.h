/*
 * pvops.h: the C ABI of pvops (paravirtual operations for x86_64 kernels).
 * Every function returns PVOPS_OK (0) or a negative PVOPS_E* code.
 * Before pvops_init succeeds, every op returns PVOPS_ENOTINSTALLED.
 *
 * Link libpvops_ffi.a into an ELF loaded at 1 MiB; its entries (PVH,
 * pvops_pvh_start, and classic Xen PV, with their Xen ELF notes) call
 * pvops_kernel_main, which you define, in 64-bit mode.
 */

#ifndef PVOPS_H
#define PVOPS_H

/* Generated from ffi/src/lib.rs by cbindgen; a test keeps them equal (PVOPS_BLESS=1 cargo test -p pvops-ffi regenerates). */

#include <stdint.h>
#include <stddef.h>
/* Defined by your kernel; called by either entry with the two words to
 * hand to pvops_init (which entry ran, and its start info's address). */
void pvops_kernel_main(uint64_t protocol, uint64_t info);

/*
 Success.
 */
#define PVOPS_OK 0

/*
 No backend is installed yet (call `pvops_init` first).
 */
#define PVOPS_ENOTINSTALLED -1

/*
 A backend is installed already; the call changed nothing.
 */
#define PVOPS_EALREADY -2

/*
 No backend could start on this machine.
 */
#define PVOPS_ENOBACKEND -3

/*
 The boot information was malformed (a backend was still installed, so
 the console works to say so).
 */
#define PVOPS_EBOOTINFO -4

/*
 A pointer argument was null or a buffer too small.
 */
#define PVOPS_EINVAL -5

#ifdef __cplusplus
extern "C" {
#endif // __cplusplus

/*
 Brings pvops up for a kernel entered through the library's entries:
 `protocol` and `info` are the two words `pvops_kernel_main` received
 (PVH: `hvm_start_info`; Xen classic PV, in ring 3: `start_info`).

 Returns `PVOPS_OK`, `PVOPS_EALREADY`, `PVOPS_ENOBACKEND` or
 `PVOPS_EBOOTINFO` (the boot information was refused; a failsafe
 console may still print).
 */
int32_t pvops_init(uint64_t protocol, uint64_t info);

/*
 Brings pvops up for a kernel entered through the PVH entry (first
 4 GiB identity-mapped): parses `hvm_start_info` at `start_info_paddr`,
 detects the platform and installs the best backend.

 Returns `PVOPS_OK`, `PVOPS_EALREADY`, `PVOPS_ENOBACKEND` or
 `PVOPS_EBOOTINFO`.
 */
int32_t pvops_init_pvh(uint64_t start_info_paddr);

/*
 Whether a backend is installed: 1 or 0.
 */
int32_t pvops_is_installed(void);

/*
 Writes the platform line's body (`platform=.. backend=.. features=..
 hypervisor=..`), NUL-terminated, into `buf` of `len` bytes. Returns the
 string's length, `PVOPS_EINVAL` if `buf` is null or too small, or
 `PVOPS_ENOTINSTALLED`.

 # Safety
 `buf` must be null or point to `len` writable bytes.
 */
int32_t pvops_identity(uint8_t *buf, uintptr_t len);

/*
 Writes `len` bytes at `bytes` to the console.

 # Safety
 `bytes` must be null (with `len` 0) or point to `len` readable bytes.
 */
int32_t pvops_console_write(const uint8_t *bytes, uintptr_t len);

/*
 Tells the host the kernel panicked, with `len` bytes of message at
 `bytes`, where the platform can (Hyper-V's crash MSRs; nothing
 elsewhere). Safe to call before `pvops_init` (then it does nothing and
 returns `PVOPS_ENOTINSTALLED`), so a panic path may always call it.

 # Safety
 `bytes` must be valid for reads of `len` bytes (or `len` be 0).
 */
int32_t pvops_report_panic(const uint8_t *bytes, uintptr_t len);

/*
 Powers off with `code`. Returns only if no backend is installed
 (`PVOPS_ENOTINSTALLED`).
 */
int32_t pvops_shutdown(uint8_t code);

/*
 Stores the interrupt flags in `*flags` and masks interrupts.

 # Safety
 `flags` must be null or valid for a write.
 */
int32_t pvops_irq_save(uint64_t *flags);

/*
 Restores interrupt flags saved by `pvops_irq_save`.
 */
int32_t pvops_irq_restore(uint64_t flags);

/*
 Masks interrupts.
 */
int32_t pvops_irq_disable(void);

/*
 Unmasks interrupts.
 */
int32_t pvops_irq_enable(void);

/*
 Signals end of interrupt.
 */
int32_t pvops_eoi(void);

/*
 Sends interrupt `vector` to platform CPU `cpu`.
 */
int32_t pvops_send_ipi(uint32_t cpu, uint8_t vector);

/*
 Stores this CPU's platform number in `*cpu`.

 # Safety
 `cpu` must be null or valid for a write.
 */
int32_t pvops_current_cpu(uint32_t *cpu);

/*
 Stores nanoseconds since boot (monotonic) in `*ns`.

 # Safety
 `ns` must be null or valid for a write.
 */
int32_t pvops_sched_clock(uint64_t *ns);

/*
 Stores the wall-clock time (Unix seconds and nanoseconds).

 # Safety
 `secs` and `nsecs` must be null or valid for a write.
 */
int32_t pvops_wall_clock(uint64_t *secs, uint32_t *nsecs);

/*
 Prepares this CPU's one-shot timer to raise `vector`.
 */
int32_t pvops_timer_setup(uint8_t vector);

/*
 Arms this CPU's one-shot timer `delta_ns` from now.
 */
int32_t pvops_timer_arm(uint64_t delta_ns);

/*
 Stores CR3 in `*value`.

 # Safety
 `value` must be null or valid for a write.
 */
int32_t pvops_read_cr3(uint64_t *value);

/*
 Switches address space.

 # Safety
 As `pvops::mmu::write_cr3`: the new tables must map everything in use.
 */
int32_t pvops_write_cr3(uint64_t value);

/*
 Writes the PTE at `entry` (which maps virtual address `va`) and flushes
 `va` from this CPU's TLB.

 # Safety
 As `pvops::mmu::set_pte`: `entry` points into a live page table.
 */
int32_t pvops_set_pte(uint64_t *entry, uint64_t value, uint64_t va);

/*
 Runs CPUID `leaf`/`subleaf`, storing EAX, EBX, ECX, EDX in `out[0..4]`.

 # Safety
 `out` must be null or point to 4 writable `uint32_t`.
 */
int32_t pvops_cpuid(uint32_t leaf, uint32_t subleaf, uint32_t *out);

/*
 The C kernel's entry, called by either entry in 64-bit mode
 with the words to give `pvops_init`.
 */
extern void pvops_kernel_main(uint64_t protocol, uint64_t info);

#ifdef __cplusplus
}  // extern "C"
#endif  // __cplusplus

#endif  /* PVOPS_H */
