#ifndef NN_EXECUTOR_HOOK_H
#define NN_EXECUTOR_HOOK_H

/// Where Swift concurrency's global jobs go: `target(job)` for every job the runtime would have
/// put on its own (Dispatch) pool. Sets the runtime's `swift_task_enqueueGlobal_hook` directly,
/// which works in a binary with the Swift runtime linked in statically, where the symbol is not
/// in the dynamic symbol table and NIO's own installer (dlsym) cannot find it. Returns 0 if a
/// hook was already set (nothing is changed), 1 once installed. Call before any async code runs.
int nn_install_global_enqueue_hook(void (*target)(void *job));

#endif
