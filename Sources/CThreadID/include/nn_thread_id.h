#pragma once
#include <sys/types.h>

/// The kernel's id of the calling thread (gettid(2)); Swift cannot call the variadic syscall().
pid_t nn_gettid(void);
