#include "executor_hook.h"

#include <stddef.h>

// The runtime's hook (swift/Runtime/Concurrency.h): called with the job and the runtime's own
// enqueue, in the Swift calling convention, which for two pointer arguments and no result is the
// C one on x86-64 and arm64 (the same assumption NIO's installer makes).
extern void (*swift_task_enqueueGlobal_hook)(void *job, void (*original)(void *job));

static void (*nn_target)(void *job);

static void nn_enqueue_global(void *job, void (*original)(void *job)) {
    (void)original;
    nn_target(job);
}

int nn_install_global_enqueue_hook(void (*target)(void *job)) {
    if (swift_task_enqueueGlobal_hook != NULL) return 0;
    nn_target = target;
    __atomic_store_n(&swift_task_enqueueGlobal_hook, nn_enqueue_global, __ATOMIC_SEQ_CST);
    return 1;
}
