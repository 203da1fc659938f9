/* insn_count.c: a QEMU TCG plugin that counts executed guest instructions, in windows the guest marks.
 *
 *   gcc -O2 -shared -fPIC -fvisibility=hidden -o libinsncount.so insn_count.c
 *   qemu-aarch64 -cpu cortex-a72 -plugin ./libinsncount.so,out=counts.txt -L ROOT ROOT/usr/bin/python3 ...
 *
 * Every translated block gets one inline "counter += n_insns" (no helper call, so the run stays fast). The
 * guest opens and closes a counting window with a syscall no program makes by accident:
 * lseek(fd, MARK_OPEN or MARK_CLOSE, SEEK_SET) on any fd (emulate.py uses /dev/null). Each close appends
 * "window <k> <instructions>" to the out file; "total <instructions>" is written at exit.
 * Counts cover every guest thread (fine for the single-threaded streaming loop measured here).
 *
 * Written against the public plugin API of QEMU 7.2 (Debian bookworm's qemu-user, API version 1). Debian
 * ships no qemu-plugin.h, so the few declarations used are restated below, exactly as documented there.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* ---- the subset of qemu-plugin.h (QEMU 7.2) used here ---- */
#define QEMU_PLUGIN_EXPORT __attribute__((visibility("default")))
typedef uint64_t qemu_plugin_id_t;
typedef struct qemu_info_t qemu_info_t; /* opaque here: not read */
struct qemu_plugin_tb;
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_vcpu_syscall_cb_t)(qemu_plugin_id_t id, unsigned int vcpu_index, int64_t num,
                                              uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4,
                                              uint64_t a5, uint64_t a6, uint64_t a7, uint64_t a8);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op, void *ptr,
                                              uint64_t imm);
void qemu_plugin_register_vcpu_syscall_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_syscall_cb_t cb);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);
/* ---- end of the API subset ---- */

QEMU_PLUGIN_EXPORT int qemu_plugin_version = 1;

#define SYS_LSEEK_AARCH64 62
#define MARK_OPEN 0x524E4E4500000001ull /* "RNNE" | 1 */
#define MARK_CLOSE 0x524E4E4500000002ull

static uint64_t counter;  /* instructions executed so far (all vCPUs) */
static uint64_t opened;   /* counter when the current window opened */
static bool in_window;
static int windows;
static FILE *out;

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &counter,
                                             qemu_plugin_tb_n_insns(tb));
}

static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu, int64_t num, uint64_t a1, uint64_t a2,
                       uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6, uint64_t a7, uint64_t a8) {
    if (num != SYS_LSEEK_AARCH64) return;
    if (a2 == MARK_OPEN) {
        opened = counter;
        in_window = true;
    } else if (a2 == MARK_CLOSE && in_window) {
        fprintf(out, "window %d %" PRIu64 "\n", windows++, counter - opened);
        fflush(out);
        in_window = false;
    }
}

static void at_exit(qemu_plugin_id_t id, void *p) {
    fprintf(out, "total %" PRIu64 "\n", counter);
    fflush(out);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc,
                                           char **argv) {
    out = stderr;
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "out=", 4) == 0) {
            out = fopen(argv[i] + 4, "w");
            if (!out) {
                fprintf(stderr, "insn_count: cannot open %s for writing\n", argv[i] + 4);
                return -1;
            }
        } else {
            fprintf(stderr, "insn_count: unknown argument %s (expected out=FILE)\n", argv[i]);
            return -1;
        }
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
    qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
