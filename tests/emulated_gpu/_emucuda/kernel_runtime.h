/* The CUDA C++ dialect on the host, for the emulated CUDA device (see kernels.py).
 *
 * kernels.py compiles a kernel module as: this header, `#line 1 "kernel.cu"`, the kernel source
 * (lightly rewritten: `extern __shared__` arrays), then a generated table of the kernels that
 * get_function can reach. Device addresses are host addresses, so kernel code dereferences
 * them directly; an access outside an allocation hits a guard page, and the SIGSEGV handler of
 * the runtime library (built from this header with EMUCUDA_RUNTIME_LIBRARY) jumps back to the
 * launch driver, which reports the fault instead of crashing the process.
 *
 * Execution: the blocks of a grid run one after the other in a pseudo-random order, the threads
 * of a block one after the other in a shuffled order. A kernel that may reach __syncthreads runs
 * each thread of a block as a fiber that yields at the barrier; other kernels run as a plain
 * loop (much cheaper). Everything of one launch runs on the calling OS thread.
 *
 * The ABI structs at the top are mirrored by ctypes structures in kernels.py: change both.
 */
#ifndef EMUCUDA_KERNEL_RUNTIME_H
#define EMUCUDA_KERNEL_RUNTIME_H

#ifdef _FORTIFY_SOURCE /* glibc's longjmp_chk refuses jumps between fiber stacks */
#undef _FORTIFY_SOURCE
#endif

#include <assert.h>
#include <dlfcn.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include <tuple>
#include <type_traits>
#include <utility>

#define EMUCUDA_ABI_VERSION 4
#define EMUCUDA_EXPORT extern "C" __attribute__((visibility("default")))

/* ------------------------------------------------------------------ ABI shared with kernels.py */

enum { EMUCUDA_FAULT_NONE = 0, EMUCUDA_FAULT_SIGNAL = 1, EMUCUDA_FAULT_MISALIGNED = 2,
       EMUCUDA_FAULT_MESSAGE = 3 };

struct emucuda_fault {
    int32_t kind;       /* EMUCUDA_FAULT_* */
    int32_t sig;        /* signal number (kind SIGNAL) */
    int32_t code;       /* siginfo si_code */
    int32_t access;     /* 0 unknown, 1 read, 2 write */
    uint64_t addr;      /* faulting address (si_addr), or the misaligned pointer */
    uint64_t pc_offset; /* faulting instruction, as an offset into the module (0: elsewhere) */
    uint64_t align;     /* alignment the access needed (kind MISALIGNED) */
    uint32_t block[3], thread[3];
    uint64_t shared_lo, shared_hi; /* this launch's dynamic shared memory window */
    uint64_t stacks_lo, stacks_hi; /* the fiber stacks (a fault there: a thread's stack ran over) */
    uint64_t sp;                   /* stack pointer at the fault (a fault near it: stack overflow) */
    char message[512];
};

struct emucuda_launch {
    uint32_t grid[3], block[3];
    uint64_t shared_mem;
    uint64_t seed;
    void* const* args; /* one pointer per parameter, to its value */
};

enum { EMUCUDA_PARAM_POINTER = 1, EMUCUDA_PARAM_FLOAT = 2, EMUCUDA_PARAM_INTEGRAL = 3,
       EMUCUDA_PARAM_OTHER = 4 };

struct emucuda_param_desc {
    uint32_t size, align, kind;
};

struct emucuda_kernel_desc {
    const char* name;
    int (*run)(const emucuda_launch*, int fibers);
    uint32_t nparams;
    const emucuda_param_desc* params;
    uint32_t barrier;     /* may reach __syncthreads: run as fibers */
    uint32_t max_threads; /* __launch_bounds__ (0: none) */
};

/* The fault context of one launch: the runtime's signal handler jumps to jb while armed. */
struct emucuda_ctx {
    sigjmp_buf jb;
    volatile sig_atomic_t armed;
    emucuda_fault* fault;
};

struct emucuda_rt_api {
    int version;
    int (*arm)(emucuda_ctx*);
    void (*disarm)(void);
};

#ifdef EMUCUDA_RUNTIME_LIBRARY
/* ================================================================== the runtime library
 * One per process: the signal handler, shared by every kernel module. */

static const int emucuda_signals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL};
static struct sigaction emucuda_prev[NSIG];
static pthread_mutex_t emucuda_install_lock = PTHREAD_MUTEX_INITIALIZER;
/* initial-exec: the handler must not allocate TLS on a thread's first fault */
static __thread emucuda_ctx* emucuda_current __attribute__((tls_model("initial-exec")));
static __thread int emucuda_chaining __attribute__((tls_model("initial-exec")));
static __thread int emucuda_altstack_done __attribute__((tls_model("initial-exec")));

static void emucuda_chain(int sig, siginfo_t* si, void* uc) {
    struct sigaction* p = &emucuda_prev[sig];
    if (emucuda_chaining) { /* a handler chained back to us: stop the loop, die by default */
        signal(sig, SIG_DFL);
        return;
    }
    emucuda_chaining = 1;
    if ((p->sa_flags & SA_SIGINFO) && p->sa_sigaction != NULL) {
        p->sa_sigaction(sig, si, uc);
    } else if (!(p->sa_flags & SA_SIGINFO) && p->sa_handler != SIG_DFL &&
               p->sa_handler != SIG_IGN) {
        p->sa_handler(sig);
    } else { /* default action: the faulting instruction runs again and kills the process */
        signal(sig, SIG_DFL);
        if (si == NULL || si->si_code <= 0) raise(sig);
    }
    emucuda_chaining = 0;
}

static void emucuda_on_signal(int sig, siginfo_t* si, void* ucv) {
    emucuda_ctx* c = emucuda_current;
    if (c == NULL || !c->armed) { /* not inside a kernel run of this thread */
        emucuda_chain(sig, si, ucv);
        return;
    }
    c->armed = 0;
    emucuda_fault* f = c->fault;
    f->kind = EMUCUDA_FAULT_SIGNAL;
    f->sig = sig;
    f->code = si->si_code;
    f->addr = (uint64_t)(uintptr_t)si->si_addr;
    f->access = 0;
    f->pc_offset = 0;
#if defined(__x86_64__)
    ucontext_t* uc = (ucontext_t*)ucv;
    /* the page fault's error code says read or write (not for a general protection fault) */
    if (sig == SIGSEGV && si->si_code != SI_KERNEL)
        f->access = (uc->uc_mcontext.gregs[REG_ERR] & 2) ? 2 : 1;
    f->align = (uint64_t)uc->uc_mcontext.gregs[REG_RIP]; /* the pc, made relative by the module */
    f->sp = (uint64_t)uc->uc_mcontext.gregs[REG_RSP];
#elif defined(__aarch64__)
    f->align = (uint64_t)((ucontext_t*)ucv)->uc_mcontext.pc;
    f->sp = (uint64_t)((ucontext_t*)ucv)->uc_mcontext.sp;
#else
    f->align = 0;
#endif
    siglongjmp(c->jb, 1);
}

static void emucuda_install(void) {
    pthread_mutex_lock(&emucuda_install_lock);
    for (int sig : emucuda_signals) {
        struct sigaction cur;
        sigaction(sig, NULL, &cur);
        if ((cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == emucuda_on_signal) continue;
        /* not ours (first use, or someone installed theirs since): go on top, chain to it */
        struct sigaction ours;
        memset(&ours, 0, sizeof ours);
        ours.sa_sigaction = emucuda_on_signal;
        ours.sa_flags = SA_SIGINFO | SA_ONSTACK;
        sigemptyset(&ours.sa_mask);
        emucuda_prev[sig] = cur;
        sigaction(sig, &ours, NULL);
    }
    pthread_mutex_unlock(&emucuda_install_lock);
}

static void emucuda_altstack(void) {
    /* a thread's own stack may be the one that overflowed: handle faults on a stack of their own */
    if (emucuda_altstack_done) return;
    emucuda_altstack_done = 1;
    stack_t old;
    if (sigaltstack(NULL, &old) == 0 && !(old.ss_flags & SS_DISABLE)) return;
    size_t size = 256 * 1024;
    void* mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) return;
    stack_t ss;
    ss.ss_sp = mem;
    ss.ss_size = size;
    ss.ss_flags = 0;
    sigaltstack(&ss, NULL);
}

static int emucuda_arm(emucuda_ctx* c) {
    emucuda_install();
    emucuda_altstack();
    emucuda_current = c;
    c->armed = 1;
    return 0;
}

static void emucuda_disarm(void) {
    emucuda_ctx* c = emucuda_current;
    if (c != NULL) c->armed = 0;
    emucuda_current = NULL;
}

static const emucuda_rt_api emucuda_api = {EMUCUDA_ABI_VERSION, emucuda_arm, emucuda_disarm};

EMUCUDA_EXPORT const emucuda_rt_api* emucuda_rt_get(void) { return &emucuda_api; }

#else /* !EMUCUDA_RUNTIME_LIBRARY */
/* ================================================================== the CUDA dialect */

#ifndef __CUDA_ARCH__
#define __CUDA_ARCH__ 800
#endif
#define __CUDACC__ 1
#define __CUDACC_RTC__ 1
#define __CUDACC_VER_MAJOR__ 12
#define __CUDACC_VER_MINOR__ 0
#define __CUDACC_VER_BUILD__ 0

#define __global__
#define __device__
#define __host__
#define __constant__
#define __managed__
#define __grid_constant__
#define __noinline__ __attribute__((noinline))
#define __forceinline__ __inline__ __attribute__((always_inline))
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)
#define __maxnreg__(n)
#define __cluster_dims__(...)
/* Static shared memory: one object per module (blocks run one at a time), in a section of its own
 * so that the driver can spoil it at each block start. (GCC ignores the section of a static local
 * of a template or inline function: those are not spoiled.) */
#define __shared__ static __attribute__((section("emucuda_shared")))

extern "C" char __start_emucuda_shared[] __attribute__((weak, visibility("hidden")));
extern "C" char __stop_emucuda_shared[] __attribute__((weak, visibility("hidden")));

/* ------------------------------------------------------------------ vector types */
#define EMUCUDA_VEC(T, N, A)                                  \
    struct __attribute__((aligned(A))) N##1 { T x; };       \
    struct __attribute__((aligned(A * 2))) N##2 { T x, y; }; \
    struct N##3 { T x, y, z; };                            \
    struct __attribute__((aligned(A * 4 > 16 ? 16 : A * 4))) N##4 { T x, y, z, w; };
EMUCUDA_VEC(signed char, char, 1)
EMUCUDA_VEC(unsigned char, uchar, 1)
EMUCUDA_VEC(short, short, 2)
EMUCUDA_VEC(unsigned short, ushort, 2)
EMUCUDA_VEC(int, int, 4)
EMUCUDA_VEC(unsigned int, uint, 4)
EMUCUDA_VEC(long, long, 8)
EMUCUDA_VEC(unsigned long, ulong, 8)
EMUCUDA_VEC(long long, longlong, 8)
EMUCUDA_VEC(unsigned long long, ulonglong, 8)
EMUCUDA_VEC(float, float, 4)
EMUCUDA_VEC(double, double, 8)
#undef EMUCUDA_VEC

#define EMUCUDA_MAKE(N, T)                                                                      \
    static inline N##1 make_##N##1(T x) { return N##1{x}; }                                  \
    static inline N##2 make_##N##2(T x, T y) { return N##2{x, y}; }                          \
    static inline N##3 make_##N##3(T x, T y, T z) { return N##3{x, y, z}; }                  \
    static inline N##4 make_##N##4(T x, T y, T z, T w) { return N##4{x, y, z, w}; }
EMUCUDA_MAKE(char, signed char)
EMUCUDA_MAKE(uchar, unsigned char)
EMUCUDA_MAKE(short, short)
EMUCUDA_MAKE(ushort, unsigned short)
EMUCUDA_MAKE(int, int)
EMUCUDA_MAKE(uint, unsigned int)
EMUCUDA_MAKE(long, long)
EMUCUDA_MAKE(ulong, unsigned long)
EMUCUDA_MAKE(longlong, long long)
EMUCUDA_MAKE(ulonglong, unsigned long long)
EMUCUDA_MAKE(float, float)
EMUCUDA_MAKE(double, double)
#undef EMUCUDA_MAKE

struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1)
        : x(vx), y(vy), z(vz) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
    constexpr operator uint3() const { return uint3{x, y, z}; }
};

/* ------------------------------------------------------------------ engine state */
namespace emucuda {

static uint3 thread_idx, block_idx;
static dim3 block_dim, grid_dim;
static char* dyn_shared;            /* this launch's dynamic shared memory */
static int in_fibers;               /* running the threads as fibers (barriers allowed) */
static emucuda_ctx* ctx;               /* the running launch's fault context */
static const emucuda_rt_api* rt;

[[noreturn]] static void fail(int kind, uint64_t addr, uint64_t align, const char* fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void fail(int kind, uint64_t addr, uint64_t align, const char* fmt, ...) {
    emucuda_ctx* c = ctx;
    if (c == NULL || !c->armed) abort(); /* not inside a launch: cannot happen */
    c->armed = 0;
    emucuda_fault* f = c->fault;
    f->kind = kind;
    f->addr = addr;
    f->align = align;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->message, sizeof f->message, fmt, ap);
    va_end(ap);
    siglongjmp(c->jb, 2);
}

}  // namespace emucuda

#define threadIdx (static_cast<const uint3&>(::emucuda::thread_idx))
#define blockIdx (static_cast<const uint3&>(::emucuda::block_idx))
#define blockDim (static_cast<const dim3&>(::emucuda::block_dim))
#define gridDim (static_cast<const dim3&>(::emucuda::grid_dim))
#define warpSize 32

/* UBSan's alignment check (-fsanitize=alignment) calls these: a misaligned access faults on a GPU
 * (cudaErrorMisalignedAddress), so it is a fault here too. */
struct emucuda_ubsan_loc { const char* file; uint32_t line, column; };
struct emucuda_ubsan_type { uint16_t kind, info; char name[1]; };
struct emucuda_ubsan_mismatch {
    emucuda_ubsan_loc loc;
    const emucuda_ubsan_type* type;
    unsigned char log_align;
    unsigned char check_kind;
};

static const char* emucuda_access_word(unsigned char kind) {
    switch (kind) {
        case 0: return "load of";
        case 1: return "store to";
        case 2: return "reference to";
        case 3: case 4: return "member access within";
        default: return "access to";
    }
}

extern "C" [[noreturn]] void __ubsan_handle_type_mismatch_v1_abort(emucuda_ubsan_mismatch* d,
                                                                   uintptr_t p) {
    uint64_t align = 1ull << d->log_align;
    ::emucuda::fail(EMUCUDA_FAULT_MISALIGNED, p, align,
                 "misaligned %s %s at 0x%llx (needs %llu-byte alignment) at line %u of the "
                 "kernel source", emucuda_access_word(d->check_kind), d->type->name,
                 (unsigned long long)p, (unsigned long long)align, d->loc.line);
}

extern "C" [[noreturn]] void __ubsan_handle_type_mismatch_v1(emucuda_ubsan_mismatch* d, uintptr_t p) {
    __ubsan_handle_type_mismatch_v1_abort(d, p);
}

/* assert() in device code: CUDA stops the kernel (cudaErrorAssert); so do we. */
extern "C" void __assert_fail(const char* expr, const char* file, unsigned int line,
                              const char* func) noexcept {
    ::emucuda::fail(EMUCUDA_FAULT_MESSAGE, 0, 0, "device-side assertion `%s` failed at line %u of %s "
                 "(in %s)", expr, line, file, func);
}

/* ------------------------------------------------------------------ fibers */
namespace emucuda {

enum { F_READY = 0, F_WAIT = 1, F_DONE = 2 };

struct fiber {
    void* sp;
#if !defined(__x86_64__) || defined(EMUCUDA_FORCE_UCONTEXT)
    ucontext_t uc;
#endif
    uint3 tid;
    int state;
};

static const size_t STACK_SIZE = 256 * 1024; /* a thread's locals live here, not in "registers" */
static size_t page_size;
static char* stacks;                           /* one region: [guard page | stack] per fiber */
static unsigned stacks_count;
static fiber* fibers;
static fiber* cur_fiber;
static void (*fiber_body)(void*);
static void* fiber_arg;
static unsigned bar_count, bar_and, bar_or;    /* __syncthreads_count/and/or of this phase */
static unsigned bar_result_count, bar_result_and, bar_result_or;

#if defined(__x86_64__) && !defined(EMUCUDA_FORCE_UCONTEXT)
/* switch_to(save, next): save callee-saved registers on this stack, store its sp in *save, go on
 * on next's stack. A new fiber's stack holds r12 = fiber, r13 = entry and returns to fiber_start. */
__asm__(
    ".text\n.p2align 4\n"
    ".type emucuda_switch_to,@function\n"
    "emucuda_switch_to:\n"
    "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
    "  movq %rsp, (%rdi)\n  movq %rsi, %rsp\n"
    "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n"
    "  ret\n"
    ".size emucuda_switch_to, .-emucuda_switch_to\n"
    ".p2align 4\n"
    ".type emucuda_fiber_start,@function\n"
    "emucuda_fiber_start:\n"
    "  movq %r12, %rdi\n  callq *%r13\n  ud2\n"
    ".size emucuda_fiber_start, .-emucuda_fiber_start\n");
extern "C" void emucuda_switch_to(void** save, void* next) __attribute__((visibility("hidden")));
extern "C" void emucuda_fiber_start(void) __attribute__((visibility("hidden")));
static void* sched_sp;

static void fiber_main(fiber* f);

static inline void fiber_init(fiber* f, char* top) {
    void** sp = (void**)((uintptr_t)top & ~(uintptr_t)15);
    *--sp = (void*)&emucuda_fiber_start;  /* return address of the first switch */
    *--sp = NULL;                      /* rbp */
    *--sp = NULL;                      /* rbx */
    *--sp = (void*)f;                  /* r12 */
    *--sp = (void*)&fiber_main;        /* r13 */
    *--sp = NULL;                      /* r14 */
    *--sp = NULL;                      /* r15 */
    f->sp = sp;
}
static inline void to_fiber(fiber* f) { emucuda_switch_to(&sched_sp, f->sp); }
static inline void to_scheduler(fiber* f) { emucuda_switch_to(&f->sp, sched_sp); }
#else
static ucontext_t sched_uc;
static void fiber_main(fiber* f);
static void fiber_tramp(unsigned hi, unsigned lo) {
    fiber_main((fiber*)(((uintptr_t)hi << 32) | (uintptr_t)lo));
}
static inline void fiber_init(fiber* f, char* top) {
    getcontext(&f->uc);
    size_t size = STACK_SIZE;
    f->uc.uc_stack.ss_sp = top - size;
    f->uc.uc_stack.ss_size = size;
    f->uc.uc_link = NULL;
    uintptr_t p = (uintptr_t)f;
    makecontext(&f->uc, (void (*)())fiber_tramp, 2, (unsigned)(p >> 32), (unsigned)p);
}
static inline void to_fiber(fiber* f) { swapcontext(&sched_uc, &f->uc); }
static inline void to_scheduler(fiber* f) { swapcontext(&f->uc, &sched_uc); }
#endif

static void fiber_main(fiber* f) {
    fiber_body(fiber_arg);
    f->state = F_DONE;
    to_scheduler(f);
    abort(); /* a finished fiber is never resumed */
}

static bool ensure_fibers(unsigned n) {
    if (n <= stacks_count) return true;
    if (page_size == 0) page_size = (size_t)sysconf(_SC_PAGESIZE);
    size_t per = STACK_SIZE + page_size;
    char* mem = (char*)mmap(NULL, per * n, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mem == MAP_FAILED) return false;
    for (unsigned i = 0; i < n; ++i) mprotect(mem + i * per, page_size, PROT_NONE); /* guard */
    fiber* fs = (fiber*)calloc(n, sizeof(fiber));
    if (fs == NULL) { munmap(mem, per * n); return false; }
    if (stacks != NULL) munmap(stacks, (STACK_SIZE + page_size) * stacks_count);
    free(fibers);
    stacks = mem;
    fibers = fs;
    stacks_count = n;
    return true;
}

static inline char* stack_top(unsigned i) {
    return stacks + (size_t)(i + 1) * (STACK_SIZE + page_size);
}

}  // namespace emucuda

/* ------------------------------------------------------------------ barriers and fences */
namespace emucuda {
static inline void barrier_wait(int pred) {
    if (!in_fibers)
        fail(EMUCUDA_FAULT_MESSAGE, 0, 0, "__syncthreads() reached in a kernel run without fibers "
             "(the emulator's source analysis missed the barrier: please report)");
    bar_count += pred != 0;
    bar_and &= pred != 0;
    bar_or |= pred != 0;
    fiber* f = cur_fiber;
    f->state = F_WAIT;
    to_scheduler(f);
}
}  // namespace emucuda

static inline void __syncthreads(void) { ::emucuda::barrier_wait(1); }
static inline int __syncthreads_count(int p) {
    ::emucuda::barrier_wait(p);
    return (int)::emucuda::bar_result_count;
}
static inline int __syncthreads_and(int p) {
    ::emucuda::barrier_wait(p);
    return (int)::emucuda::bar_result_and;
}
static inline int __syncthreads_or(int p) {
    ::emucuda::barrier_wait(p);
    return (int)::emucuda::bar_result_or;
}
/* One OS thread runs the whole launch: fences only keep the compiler from reordering. */
static inline void __threadfence(void) { __asm__ __volatile__("" ::: "memory"); }
static inline void __threadfence_block(void) { __asm__ __volatile__("" ::: "memory"); }
static inline void __threadfence_system(void) { __asm__ __volatile__("" ::: "memory"); }
[[noreturn]] static inline void __trap(void) {
    ::emucuda::fail(EMUCUDA_FAULT_MESSAGE, 0, 0, "__trap() called");
}
[[noreturn]] static inline void __brkpt(void) {
    ::emucuda::fail(EMUCUDA_FAULT_MESSAGE, 0, 0, "__brkpt() called");
}
static inline long long clock64(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}
static inline void __nanosleep(unsigned int) {}

/* ------------------------------------------------------------------ atomics */
namespace emucuda {
template <class T> static inline void check_atomic(const void* p, const char* what) {
    if ((uintptr_t)p % sizeof(T) != 0)
        fail(EMUCUDA_FAULT_MISALIGNED, (uint64_t)(uintptr_t)p, sizeof(T),
             "misaligned %s on 0x%llx (needs %zu-byte alignment)", what,
             (unsigned long long)(uintptr_t)p, sizeof(T));
}
template <class T> static inline T fetch_add(T* p, T v) {
    check_atomic<T>(p, "atomicAdd");
    return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}
template <class T, class F> static inline T cas_loop(T* p, F f, const char* what) {
    check_atomic<T>(p, what);
    T old = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (!__atomic_compare_exchange_n(p, &old, f(old), false, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED)) {
    }
    return old;
}
template <class T> static inline T float_add(T* p, T v) {
    /* floats: compare and swap the bit pattern (the builtins add integers only) */
    using U = typename std::conditional<sizeof(T) == 4, uint32_t, uint64_t>::type;
    check_atomic<T>(p, "atomicAdd");
    U* q = (U*)p;
    U old = __atomic_load_n(q, __ATOMIC_RELAXED), next;
    T cur;
    do {
        memcpy(&cur, &old, sizeof cur);
        T sum = cur + v;
        memcpy(&next, &sum, sizeof next);
    } while (!__atomic_compare_exchange_n(q, &old, next, false, __ATOMIC_RELAXED,
                                          __ATOMIC_RELAXED));
    return cur;
}
}  // namespace emucuda

#define EMUCUDA_ATOMIC_INT(T)                                                                   \
    static inline T atomicAdd(T* p, T v) { return ::emucuda::fetch_add(p, v); }                 \
    static inline T atomicExch(T* p, T v) {                                                  \
        ::emucuda::check_atomic<T>(p, "atomicExch");                                            \
        return __atomic_exchange_n(p, v, __ATOMIC_RELAXED);                                  \
    }                                                                                        \
    static inline T atomicCAS(T* p, T cmp, T v) {                                            \
        ::emucuda::check_atomic<T>(p, "atomicCAS");                                             \
        __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);  \
        return cmp;                                                                          \
    }                                                                                        \
    static inline T atomicAnd(T* p, T v) {                                                   \
        ::emucuda::check_atomic<T>(p, "atomicAnd");                                             \
        return __atomic_fetch_and(p, v, __ATOMIC_RELAXED);                                   \
    }                                                                                        \
    static inline T atomicOr(T* p, T v) {                                                    \
        ::emucuda::check_atomic<T>(p, "atomicOr");                                              \
        return __atomic_fetch_or(p, v, __ATOMIC_RELAXED);                                    \
    }                                                                                        \
    static inline T atomicXor(T* p, T v) {                                                   \
        ::emucuda::check_atomic<T>(p, "atomicXor");                                             \
        return __atomic_fetch_xor(p, v, __ATOMIC_RELAXED);                                   \
    }                                                                                        \
    static inline T atomicMin(T* p, T v) {                                                   \
        return ::emucuda::cas_loop(p, [v](T o) { return o < v ? o : v; }, "atomicMin");        \
    }                                                                                        \
    static inline T atomicMax(T* p, T v) {                                                   \
        return ::emucuda::cas_loop(p, [v](T o) { return o > v ? o : v; }, "atomicMax");        \
    }
EMUCUDA_ATOMIC_INT(int)
EMUCUDA_ATOMIC_INT(unsigned int)
EMUCUDA_ATOMIC_INT(unsigned long long)
#undef EMUCUDA_ATOMIC_INT
/* What CUDA has beyond the three types above. */
static inline int atomicSub(int* p, int v) {
    ::emucuda::check_atomic<int>(p, "atomicSub");
    return __atomic_fetch_sub(p, v, __ATOMIC_RELAXED);
}
static inline unsigned int atomicSub(unsigned int* p, unsigned int v) {
    ::emucuda::check_atomic<unsigned int>(p, "atomicSub");
    return __atomic_fetch_sub(p, v, __ATOMIC_RELAXED);
}
static inline long long atomicMin(long long* p, long long v) {
    return ::emucuda::cas_loop(p, [v](long long o) { return o < v ? o : v; }, "atomicMin");
}
static inline long long atomicMax(long long* p, long long v) {
    return ::emucuda::cas_loop(p, [v](long long o) { return o > v ? o : v; }, "atomicMax");
}
static inline unsigned short atomicCAS(unsigned short* p, unsigned short cmp, unsigned short v) {
    ::emucuda::check_atomic<unsigned short>(p, "atomicCAS");
    __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
    return cmp;
}
static inline float atomicAdd(float* p, float v) { return ::emucuda::float_add(p, v); }
static inline double atomicAdd(double* p, double v) { return ::emucuda::float_add(p, v); }
static inline float atomicExch(float* p, float v) {
    ::emucuda::check_atomic<float>(p, "atomicExch");
    uint32_t bits, old;
    memcpy(&bits, &v, 4);
    old = __atomic_exchange_n((uint32_t*)p, bits, __ATOMIC_RELAXED);
    float r;
    memcpy(&r, &old, 4);
    return r;
}
static inline unsigned int atomicInc(unsigned int* p, unsigned int lim) {
    return ::emucuda::cas_loop(p, [lim](unsigned int o) { return o >= lim ? 0u : o + 1u; },
                            "atomicInc");
}
static inline unsigned int atomicDec(unsigned int* p, unsigned int lim) {
    return ::emucuda::cas_loop(
        p, [lim](unsigned int o) { return (o == 0u || o > lim) ? lim : o - 1u; }, "atomicDec");
}
/* Scoped variants: one OS thread runs everything, every scope is the same. */
#define atomicAdd_block atomicAdd
#define atomicAdd_system atomicAdd
#define atomicSub_block atomicSub
#define atomicSub_system atomicSub
#define atomicExch_block atomicExch
#define atomicExch_system atomicExch
#define atomicCAS_block atomicCAS
#define atomicCAS_system atomicCAS
#define atomicMin_block atomicMin
#define atomicMin_system atomicMin
#define atomicMax_block atomicMax
#define atomicMax_system atomicMax
#define atomicAnd_block atomicAnd
#define atomicAnd_system atomicAnd
#define atomicOr_block atomicOr
#define atomicOr_system atomicOr
#define atomicXor_block atomicXor
#define atomicXor_system atomicXor

/* ------------------------------------------------------------------ loads, min/max, intrinsics */
template <class T> static inline T __ldg(const T* p) { return *p; }
template <class T> static inline T __ldcg(const T* p) { return *p; }
template <class T> static inline T __ldca(const T* p) { return *p; }
template <class T> static inline T __ldcs(const T* p) { return *p; }
template <class T> static inline T __ldlu(const T* p) { return *p; }
template <class T> static inline T __ldcv(const T* p) { return *p; }
template <class T> static inline void __stwb(T* p, T v) { *p = v; }
template <class T> static inline void __stcg(T* p, T v) { *p = v; }
template <class T> static inline void __stcs(T* p, T v) { *p = v; }
template <class T> static inline void __stwt(T* p, T v) { *p = v; }

/* min/max with CUDA's overloads (crt/math_functions.hpp): mixed signedness gives unsigned. */
#define EMUCUDA_MINMAX(R, A, B)                                     \
    static inline R min(A a, B b) { return (R)a < (R)b ? (R)a : (R)b; } \
    static inline R max(A a, B b) { return (R)a > (R)b ? (R)a : (R)b; }
EMUCUDA_MINMAX(int, int, int)
EMUCUDA_MINMAX(unsigned int, unsigned int, unsigned int)
EMUCUDA_MINMAX(unsigned int, int, unsigned int)
EMUCUDA_MINMAX(unsigned int, unsigned int, int)
EMUCUDA_MINMAX(long, long, long)
EMUCUDA_MINMAX(unsigned long, unsigned long, unsigned long)
EMUCUDA_MINMAX(unsigned long, long, unsigned long)
EMUCUDA_MINMAX(unsigned long, unsigned long, long)
EMUCUDA_MINMAX(long long, long long, long long)
EMUCUDA_MINMAX(unsigned long long, unsigned long long, unsigned long long)
EMUCUDA_MINMAX(unsigned long long, long long, unsigned long long)
EMUCUDA_MINMAX(unsigned long long, unsigned long long, long long)
EMUCUDA_MINMAX(double, float, double)
EMUCUDA_MINMAX(double, double, float)
#undef EMUCUDA_MINMAX
static inline float min(float a, float b) { return fminf(a, b); }
static inline float max(float a, float b) { return fmaxf(a, b); }
static inline double min(double a, double b) { return fmin(a, b); }
static inline double max(double a, double b) { return fmax(a, b); }
static inline unsigned int umin(unsigned int a, unsigned int b) { return a < b ? a : b; }
static inline unsigned int umax(unsigned int a, unsigned int b) { return a > b ? a : b; }
static inline long long llmin(long long a, long long b) { return a < b ? a : b; }
static inline long long llmax(long long a, long long b) { return a > b ? a : b; }
static inline unsigned long long ullmin(unsigned long long a, unsigned long long b) {
    return a < b ? a : b;
}
static inline unsigned long long ullmax(unsigned long long a, unsigned long long b) {
    return a > b ? a : b;
}

static inline int __popc(unsigned int x) { return __builtin_popcount(x); }
static inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
static inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
static inline int __clzll(long long x) {
    return x == 0 ? 64 : __builtin_clzll((unsigned long long)x);
}
static inline int __ffs(int x) { return __builtin_ffs(x); }
static inline int __ffsll(long long x) { return __builtin_ffsll(x); }
static inline unsigned int __brev(unsigned int x) {
    x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
    x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
    x = ((x >> 4) & 0x0F0F0F0Fu) | ((x & 0x0F0F0F0Fu) << 4);
    return __builtin_bswap32(x);
}
static inline unsigned long long __brevll(unsigned long long x) {
    return ((unsigned long long)__brev((unsigned)x) << 32) | __brev((unsigned)(x >> 32));
}
static inline unsigned int __byte_perm(unsigned int x, unsigned int y, unsigned int s) {
    unsigned long long v = ((unsigned long long)y << 32) | x;
    unsigned int r = 0;
    for (int i = 0; i < 4; ++i) r |= (unsigned)((v >> (8 * ((s >> (4 * i)) & 7))) & 0xFF) << (8 * i);
    return r;
}
static inline unsigned int __funnelshift_l(unsigned int lo, unsigned int hi, unsigned int s) {
    unsigned long long v = ((unsigned long long)hi << 32) | lo;
    return (unsigned int)((v << (s & 31)) >> 32);
}
static inline unsigned int __funnelshift_lc(unsigned int lo, unsigned int hi, unsigned int s) {
    unsigned long long v = ((unsigned long long)hi << 32) | lo;
    return (unsigned int)((v << (s > 32 ? 32 : s)) >> 32);
}
static inline unsigned int __funnelshift_r(unsigned int lo, unsigned int hi, unsigned int s) {
    unsigned long long v = ((unsigned long long)hi << 32) | lo;
    return (unsigned int)(v >> (s & 31));
}
static inline unsigned int __funnelshift_rc(unsigned int lo, unsigned int hi, unsigned int s) {
    unsigned long long v = ((unsigned long long)hi << 32) | lo;
    return (unsigned int)(v >> (s > 32 ? 32 : s));
}
static inline int __mulhi(int a, int b) { return (int)(((long long)a * b) >> 32); }
static inline unsigned int __umulhi(unsigned int a, unsigned int b) {
    return (unsigned int)(((unsigned long long)a * b) >> 32);
}
static inline long long __mul64hi(long long a, long long b) {
    return (long long)(((__int128)a * b) >> 64);
}
static inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
    return (unsigned long long)(((unsigned __int128)a * b) >> 64);
}
static inline int __mul24(int a, int b) {
    return (int)((long long)((a << 8) >> 8) * (long long)((b << 8) >> 8));
}
static inline unsigned int __umul24(unsigned int a, unsigned int b) {
    return (a & 0xFFFFFFu) * (b & 0xFFFFFFu);
}
static inline int __hadd(int a, int b) { return (int)(((long long)a + b) >> 1); }
static inline int __rhadd(int a, int b) { return (int)(((long long)a + b + 1) >> 1); }
static inline unsigned int __uhadd(unsigned int a, unsigned int b) {
    return (unsigned int)(((unsigned long long)a + b) >> 1);
}
static inline unsigned int __urhadd(unsigned int a, unsigned int b) {
    return (unsigned int)(((unsigned long long)a + b + 1) >> 1);
}
static inline unsigned int __sad(int a, int b, unsigned int c) {
    return c + (unsigned int)(a > b ? a - b : b - a);
}
static inline unsigned int __usad(unsigned int a, unsigned int b, unsigned int c) {
    return c + (a > b ? a - b : b - a);
}

template <class To, class From> static inline To emucuda_bits(From v) {
    static_assert(sizeof(To) == sizeof(From), "same size");
    To r;
    memcpy(&r, &v, sizeof r);
    return r;
}
static inline float __int_as_float(int x) { return emucuda_bits<float>(x); }
static inline int __float_as_int(float x) { return emucuda_bits<int>(x); }
static inline float __uint_as_float(unsigned int x) { return emucuda_bits<float>(x); }
static inline unsigned int __float_as_uint(float x) { return emucuda_bits<unsigned int>(x); }
static inline double __longlong_as_double(long long x) { return emucuda_bits<double>(x); }
static inline long long __double_as_longlong(double x) { return emucuda_bits<long long>(x); }
static inline int __double2hiint(double x) { return (int)(emucuda_bits<long long>(x) >> 32); }
static inline int __double2loint(double x) { return (int)emucuda_bits<long long>(x); }
static inline double __hiloint2double(int hi, int lo) {
    return emucuda_bits<double>((long long)(((unsigned long long)(unsigned)hi << 32) | (unsigned)lo));
}
static inline int __float2int_rn(float x) { return (int)nearbyintf(x); }
static inline int __float2int_rz(float x) { return (int)x; }
static inline int __float2int_rd(float x) { return (int)floorf(x); }
static inline int __float2int_ru(float x) { return (int)ceilf(x); }
static inline unsigned int __float2uint_rn(float x) { return (unsigned int)nearbyintf(x); }
static inline unsigned int __float2uint_rz(float x) { return (unsigned int)x; }
static inline int __double2int_rn(double x) { return (int)nearbyint(x); }
static inline int __double2int_rz(double x) { return (int)x; }
static inline float __int2float_rn(int x) { return (float)x; }
static inline float __uint2float_rn(unsigned int x) { return (float)x; }
static inline double __int2double_rn(int x) { return (double)x; }
static inline float __fdividef(float a, float b) { return a / b; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
static inline float __frcp_rn(float a) { return 1.0f / a; }
static inline float __fsqrt_rn(float a) { return sqrtf(a); }
static inline double __dadd_rn(double a, double b) { return a + b; }
static inline double __dmul_rn(double a, double b) { return a * b; }
static inline double __fma_rn(double a, double b, double c) { return fma(a, b, c); }
/* glibc declares these names itself: the CUDA fast-math intrinsics become the plain functions. */
#define __expf expf
#define __exp10f exp10f
#define __logf logf
#define __log2f log2f
#define __log10f log10f
#define __sinf sinf
#define __cosf cosf
#define __tanf tanf
#define __powf powf
static inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
static inline float saturate(float x) { return __saturatef(x); }
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
static inline double rsqrt(double x) { return 1.0 / sqrt(x); }
static inline float rcbrtf(float x) { return 1.0f / cbrtf(x); }
static inline double rcbrt(double x) { return 1.0 / cbrt(x); }
static inline float sinpif(float x) { return sinf((float)M_PI * x); }
static inline float cospif(float x) { return cosf((float)M_PI * x); }
static inline double sinpi(double x) { return sin(M_PI * x); }
static inline double cospi(double x) { return cos(M_PI * x); }

/* Warp-level operations need the 32 threads of a warp in lock step: not emulated, and a clear
 * compile error beats a wrong result. */
#pragma GCC poison __shfl __shfl_up __shfl_down __shfl_xor __shfl_sync __shfl_up_sync
#pragma GCC poison __shfl_down_sync __shfl_xor_sync __ballot __ballot_sync __any __all
#pragma GCC poison __any_sync __all_sync __uni_sync __activemask __syncwarp __match_any_sync
#pragma GCC poison __match_all_sync __reduce_add_sync __reduce_min_sync __reduce_max_sync
#pragma GCC poison __reduce_and_sync __reduce_or_sync __reduce_xor_sync __lanemask_lt
#pragma GCC poison cudaMalloc cudaFree cudaMemcpyAsync cudaDeviceSynchronize tex1Dfetch
#pragma GCC poison tex2D tex3D surf2Dwrite surf2Dread

/* ------------------------------------------------------------------ the grid */
namespace emucuda {

static inline uint64_t splitmix(uint64_t* s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* A pseudo-random bijection of [0, n): a 4-round Feistel network on the next even power of two,
 * walked until it lands inside (at most 4x the domain, so about 4 steps at worst on average). */
struct block_order {
    uint64_t n, mask;
    int half;
    uint64_t key[4];
    void init(uint64_t count, uint64_t* rng) {
        n = count;
        int bits = 2;
        while (bits < 64 && (1ull << bits) < n) ++bits;
        half = (bits + 1) / 2;
        mask = (1ull << half) - 1;
        for (auto& k : key) k = splitmix(rng);
    }
    inline uint64_t step(uint64_t i) const {
        uint64_t l = i >> half, r = i & mask;
        for (int k = 0; k < 4; ++k) {
            uint64_t f = (r ^ key[k]) * 0x9E3779B97F4A7C15ull;
            f ^= f >> 29;
            uint64_t nl = r;
            r = (l ^ f) & mask;
            l = nl;
        }
        return (l << half) | r;
    }
    inline uint64_t operator()(uint64_t i) const {
        if (n <= 1) return 0;
        do i = step(i); while (i >= n);
        return i;
    }
};

static char* dyn_region;      /* [dynamic shared memory window | guard page] */
static size_t dyn_region_data;
static const size_t MAX_SHARED = 48 * 1024;

static bool ensure_dyn_region(void) {
    if (dyn_region != NULL) return true;
    if (page_size == 0) page_size = (size_t)sysconf(_SC_PAGESIZE);
    dyn_region_data = (MAX_SHARED + 16 + page_size - 1) / page_size * page_size;
    char* mem = (char*)mmap(NULL, dyn_region_data + page_size, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) return false;
    mprotect(mem + dyn_region_data, page_size, PROT_NONE);
    dyn_region = mem;
    return true;
}

/* Everything a launch needs besides the kernel call itself. */
struct grid_run {
    uint64_t nblocks;
    unsigned nthreads;
    size_t shared;
    uint64_t rng;
    block_order order;
    uint3 tids[1024]; /* the block's thread indices, shuffled once per launch */

    bool setup(const emucuda_launch* L, emucuda_fault* f) {
        grid_dim = dim3(L->grid[0], L->grid[1], L->grid[2]);
        block_dim = dim3(L->block[0], L->block[1], L->block[2]);
        nblocks = (uint64_t)L->grid[0] * L->grid[1] * L->grid[2];
        nthreads = L->block[0] * L->block[1] * L->block[2];
        if (nthreads == 0 || nthreads > 1024 || L->shared_mem > MAX_SHARED) return false;
        rng = L->seed;
        order.init(nblocks, &rng);
        unsigned t = 0;
        for (unsigned z = 0; z < L->block[2]; ++z)
            for (unsigned y = 0; y < L->block[1]; ++y)
                for (unsigned x = 0; x < L->block[0]; ++x) tids[t++] = uint3{x, y, z};
        for (unsigned i = nthreads - 1; i > 0; --i) {
            unsigned j = (unsigned)(splitmix(&rng) % (i + 1));
            uint3 tmp = tids[i];
            tids[i] = tids[j];
            tids[j] = tmp;
        }
        if (!ensure_dyn_region()) return false;
        shared = (size_t)L->shared_mem;
        dyn_shared = dyn_region + dyn_region_data - ((shared + 15) & ~(size_t)15);
        f->shared_lo = (uint64_t)(uintptr_t)dyn_shared;
        f->shared_hi = (uint64_t)(uintptr_t)(dyn_region + dyn_region_data);
        return true;
    }

    inline void begin_block(uint64_t b) {
        uint64_t l = order(b);
        uint64_t gx = grid_dim.x, gy = grid_dim.y;
        block_idx = uint3{(unsigned)(l % gx), (unsigned)((l / gx) % gy), (unsigned)(l / (gx * gy))};
        /* shared memory starts out as garbage on a GPU: spoil it, so code that reads it unset
         * fails here as well */
        if (__start_emucuda_shared != NULL && __stop_emucuda_shared > __start_emucuda_shared)
            memset(__start_emucuda_shared, 0xFF, (size_t)(__stop_emucuda_shared - __start_emucuda_shared));
        if (shared) memset(dyn_shared, 0xFF, shared);
    }
};

static grid_run grid;

/* Every thread of every block, one after the other: for kernels without barriers. */
template <class Call> static void run_loop(Call& call) {
    const unsigned n = grid.nthreads;
    for (uint64_t b = 0; b < grid.nblocks; ++b) {
        grid.begin_block(b);
        const unsigned r = (unsigned)(splitmix(&grid.rng) % n); /* this block starts there */
        for (unsigned t = r; t < n; ++t) {
            thread_idx = grid.tids[t];
            call();
        }
        for (unsigned t = 0; t < r; ++t) {
            thread_idx = grid.tids[t];
            call();
        }
    }
}

/* The threads of a block as fibers: each runs until it waits at a barrier or ends; when all
 * have, the barrier opens and the waiting ones go on, in a new shuffled order. */
static bool run_fibers(void (*body)(void*), void* arg) {
    const unsigned n = grid.nthreads;
    if (!ensure_fibers(n)) return false;
    fiber_body = body;
    fiber_arg = arg;
    unsigned order[1024];
    in_fibers = 1;
    for (uint64_t b = 0; b < grid.nblocks; ++b) {
        grid.begin_block(b);
        for (unsigned i = 0; i < n; ++i) {
            fibers[i].tid = grid.tids[i];
            fibers[i].state = F_READY;
            fiber_init(&fibers[i], stack_top(i));
            order[i] = i;
        }
        bar_count = 0;
        bar_and = 1;
        bar_or = 0;
        for (;;) {
            for (unsigned i = n - 1; i > 0; --i) {
                unsigned j = (unsigned)(splitmix(&grid.rng) % (i + 1));
                unsigned tmp = order[i];
                order[i] = order[j];
                order[j] = tmp;
            }
            for (unsigned k = 0; k < n; ++k) {
                fiber* f = &fibers[order[k]];
                if (f->state != F_READY) continue;
                cur_fiber = f;
                thread_idx = f->tid;
                to_fiber(f);
            }
            unsigned waiting = 0;
            for (unsigned i = 0; i < n; ++i)
                if (fibers[i].state == F_WAIT) {
                    fibers[i].state = F_READY;
                    ++waiting;
                }
            if (waiting == 0) break;
            /* threads that ended count as arrived (as on current GPUs) */
            bar_result_count = bar_count;
            bar_result_and = bar_and;
            bar_result_or = bar_or;
            bar_count = 0;
            bar_and = 1;
            bar_or = 0;
        }
    }
    in_fibers = 0;
    cur_fiber = NULL;
    return true;
}

/* ------------------------------------------------------------------ one kernel's launcher */
template <class T> static constexpr uint32_t param_kind() {
    return std::is_pointer<T>::value          ? EMUCUDA_PARAM_POINTER
           : std::is_floating_point<T>::value ? EMUCUDA_PARAM_FLOAT
           : (std::is_integral<T>::value || std::is_enum<T>::value) ? EMUCUDA_PARAM_INTEGRAL
                                                                     : EMUCUDA_PARAM_OTHER;
}

template <auto F> struct kernel {
    static_assert(sizeof(F) == 0 || !sizeof(F), "a __global__ function must return void");
};

template <typename... A, void (*F)(A...)> struct kernel<F> {
    using args_t = std::tuple<typename std::decay<A>::type...>;
    static constexpr uint32_t nparams = sizeof...(A);
    static constexpr emucuda_param_desc params[sizeof...(A) + 1] = {
        {(uint32_t)sizeof(typename std::decay<A>::type),
         (uint32_t)alignof(typename std::decay<A>::type),
         param_kind<typename std::decay<A>::type>()}...,
        {0, 0, 0}};

    template <size_t... I> static inline void call(args_t& a, std::index_sequence<I...>) {
        F(std::get<I>(a)...);
    }
    static void thread_body(void* p) {
        call(*(args_t*)p, std::index_sequence_for<A...>{});
    }
    template <size_t... I>
    static inline void unpack(args_t& a, void* const* src, std::index_sequence<I...>) {
        (memcpy((void*)&std::get<I>(a), src[I], sizeof(std::get<I>(a))), ...);
    }
    static int run(const emucuda_launch* L, int fibers) {
        args_t a;
        unpack(a, L->args, std::index_sequence_for<A...>{});
        if (fibers) return run_fibers(&thread_body, &a) ? 0 : -1;
        auto one = [&a]() { call(a, std::index_sequence_for<A...>{}); };
        run_loop(one);
        return 0;
    }
};

}  // namespace emucuda

/* EMUCUDA_KERNEL(name, barrier, max_threads, &kernel): last, as a template-id may hold commas */
#define EMUCUDA_KERNEL(name, barrier, max_threads, ...)                                          \
    emucuda_kernel_desc {                                                                         \
        name, &::emucuda::kernel<__VA_ARGS__>::run, ::emucuda::kernel<__VA_ARGS__>::nparams,         \
            ::emucuda::kernel<__VA_ARGS__>::params, barrier, (uint32_t)(max_threads)              \
    }

/* ------------------------------------------------------------------ the module's entry points */
namespace emucuda {
static uintptr_t module_base;
}

EMUCUDA_EXPORT int emucuda_module_init(const emucuda_rt_api* api) {
    if (api == NULL || api->version != EMUCUDA_ABI_VERSION) return -1;
    ::emucuda::rt = api;
    Dl_info info;
    if (dladdr((void*)&emucuda_module_init, &info) && info.dli_fbase != NULL)
        ::emucuda::module_base = (uintptr_t)info.dli_fbase;
    return EMUCUDA_ABI_VERSION;
}

EMUCUDA_EXPORT uint64_t emucuda_module_static_shared(void) {
    if (__start_emucuda_shared == NULL || __stop_emucuda_shared == NULL) return 0;
    return (uint64_t)(__stop_emucuda_shared - __start_emucuda_shared);
}

/* Defined after the kernel source, by kernels.py's generated table. */
extern const emucuda_kernel_desc emucuda_kernels[];
extern const uint32_t emucuda_kernel_count;

EMUCUDA_EXPORT const emucuda_kernel_desc* emucuda_module_kernels(uint32_t* count) {
    *count = emucuda_kernel_count;
    return emucuda_kernels;
}

/* Run kernel k over the grid. 0: done; 1: a fault (described in *fault); -1: no memory. */
EMUCUDA_EXPORT int emucuda_module_launch(uint32_t k, const emucuda_launch* L, emucuda_fault* fault) {
    static emucuda_ctx c; /* launches of one module are serialized by kernels.py */
    memset(fault, 0, sizeof *fault);
    if (k >= emucuda_kernel_count || ::emucuda::rt == NULL) return -1;
    if (!::emucuda::grid.setup(L, fault)) return -1;
    if (::emucuda::stacks != NULL) {
        fault->stacks_lo = (uint64_t)(uintptr_t)::emucuda::stacks;
        fault->stacks_hi = fault->stacks_lo +
            (uint64_t)(::emucuda::STACK_SIZE + ::emucuda::page_size) * ::emucuda::stacks_count;
    }
    c.fault = fault;
    ::emucuda::ctx = &c;
    volatile int rc = 0;
    if (sigsetjmp(c.jb, 1) == 0) { /* saves the signal mask: a fault's handler leaves it blocked */
        ::emucuda::rt->arm(&c);
        rc = emucuda_kernels[k].run(L, (int)emucuda_kernels[k].barrier);
        ::emucuda::rt->disarm();
    } else {
        ::emucuda::rt->disarm();
        ::emucuda::in_fibers = 0;
        ::emucuda::cur_fiber = NULL;
        rc = 1;
        fault->block[0] = ::emucuda::block_idx.x;
        fault->block[1] = ::emucuda::block_idx.y;
        fault->block[2] = ::emucuda::block_idx.z;
        fault->thread[0] = ::emucuda::thread_idx.x;
        fault->thread[1] = ::emucuda::thread_idx.y;
        fault->thread[2] = ::emucuda::thread_idx.z;
        if (fault->kind == EMUCUDA_FAULT_SIGNAL) {
            uintptr_t pc = (uintptr_t)fault->align; /* the handler left the pc there */
            fault->align = 0;
            Dl_info info;
            if (pc != 0 && dladdr((void*)pc, &info) && (uintptr_t)info.dli_fbase == ::emucuda::module_base)
                fault->pc_offset = pc - ::emucuda::module_base;
        }
        if (::emucuda::stacks != NULL) {
            fault->stacks_lo = (uint64_t)(uintptr_t)::emucuda::stacks;
            fault->stacks_hi = fault->stacks_lo +
                (uint64_t)(::emucuda::STACK_SIZE + ::emucuda::page_size) * ::emucuda::stacks_count;
        }
    }
    ::emucuda::ctx = NULL;
    fflush(stdout); /* device printf shows up by the end of the launch */
    return rc;
}

#endif /* EMUCUDA_RUNTIME_LIBRARY */
#endif /* EMUCUDA_KERNEL_RUNTIME_H */
