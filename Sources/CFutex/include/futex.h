#ifndef NN_FUTEX_H
#define NN_FUTEX_H

#include <stdint.h>

// Linux futexes for the engine's barriers (StepSchedule.swift). Swift cannot call syscall(2),
// which is variadic, so these two wrap it. Both are process-private (FUTEX_PRIVATE_FLAG).

/// Sleeps while *word == expected, for at most timeout_ns nanoseconds (a wake, a signal or a
/// spurious wake-up may end it sooner; the caller checks its condition again). Returns at once
/// if *word already differs.
void nn_futex_wait(uint32_t *word, uint32_t expected, long timeout_ns);

/// Wakes every thread sleeping on word.
void nn_futex_wake_all(uint32_t *word);

#endif
