// How long a cache line takes to go from one core to the other: two threads pinned to CPUs 0
// and 1 hand a counter back and forth 200,000 times (each waits for the other's store). Half a
// round trip is the latency a step's barrier, or a read of data the other core just wrote,
// pays per cache line. docs/performance.md ("Twentieth session") has the figures.
//
//   clang -O2 -pthread scripts/bench-core-to-core.c -o /tmp/core-to-core && /tmp/core-to-core
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>

enum { HANDOFFS = 200000 };
static _Alignas(64) atomic_long counter;

static void pin(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

// CPU 1: waits for each odd value, answers with the next even one.
static void *answer(void *unused) {
    (void)unused;
    pin(1);
    for (long i = 0; i < HANDOFFS; i++) {
        while (atomic_load_explicit(&counter, memory_order_acquire) != 2 * i + 1) {
        }
        atomic_store_explicit(&counter, 2 * i + 2, memory_order_release);
    }
    return 0;
}

int main(void) {
    pthread_t other;
    pin(0);
    pthread_create(&other, 0, answer, 0);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long i = 0; i < HANDOFFS; i++) {
        atomic_store_explicit(&counter, 2 * i + 1, memory_order_release);
        while (atomic_load_explicit(&counter, memory_order_acquire) != 2 * i + 2) {
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    pthread_join(other, 0);
    const double ns = (t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec);
    printf("round trip %.0f ns, one way %.0f ns\n", ns / HANDOFFS, ns / HANDOFFS / 2);
    return 0;
}
