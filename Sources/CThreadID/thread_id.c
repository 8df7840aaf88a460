#define _GNU_SOURCE
#include <sys/syscall.h>
#include <unistd.h>
#include "nn_thread_id.h"

pid_t nn_gettid(void) { return (pid_t)syscall(SYS_gettid); }
