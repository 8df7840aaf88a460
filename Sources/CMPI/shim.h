// Open MPI (Debian's libopenmpi-dev), for nnd's data-parallel training across processes.
// MPI's handles (MPI_COMM_WORLD, MPI_FLOAT, MPI_SUM, …) are macros Swift cannot import, so
// the few calls nnd makes are wrapped here as static inline functions taking plain C types.
#ifndef NND_CMPI_SHIM_H
#define NND_CMPI_SHIM_H
#include <mpi.h>
#include <stdint.h>
#include <signal.h>
#include <sys/prctl.h>

/// A rank ends with the launcher that started it (PR_SET_PDEATHSIG): when mpirun dies because
/// the daemon above it was killed, no rank is left training on its own.
static inline int nnd_signal_on_parent_death(int sig) { return prctl(PR_SET_PDEATHSIG, (unsigned long)sig, 0, 0, 0); }

/// MPI_Init_thread asking for MPI_THREAD_FUNNELED (only the training thread calls MPI).
/// Returns MPI's error code; *provided receives the thread level granted.
static inline int nnd_mpi_init(int *provided) {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (initialized) { *provided = MPI_THREAD_FUNNELED; return MPI_SUCCESS; }
    return MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, provided);
}
static inline int nnd_mpi_thread_funneled(void) { return MPI_THREAD_FUNNELED; }
static inline int nnd_mpi_finalize(void) {
    int finalized = 0;
    MPI_Finalized(&finalized);
    return finalized ? MPI_SUCCESS : MPI_Finalize();
}
static inline int nnd_mpi_rank(void) { int r = -1; MPI_Comm_rank(MPI_COMM_WORLD, &r); return r; }
static inline int nnd_mpi_size(void) { int s = 0; MPI_Comm_size(MPI_COMM_WORLD, &s); return s; }
/// This process's host name as MPI knows it; `length` receives its length.
static inline int nnd_mpi_host(char *name, int *length) { return MPI_Get_processor_name(name, length); }
static inline int nnd_mpi_max_host_name(void) { return MPI_MAX_PROCESSOR_NAME; }
/// How many ranks share this rank's host (its shared-memory node), whatever launched them:
/// mpirun says so in OMPI_COMM_WORLD_LOCAL_SIZE, Slurm's srun does not. Collective; 1 on error.
static inline int nnd_mpi_local_size(void) {
    MPI_Comm local;
    int n = 1;
    if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local) != MPI_SUCCESS) return 1;
    MPI_Comm_size(local, &n);
    MPI_Comm_free(&local);
    return n;
}

/// In-place sums across all ranks; every rank ends with the same values.
static inline int nnd_mpi_sum_floats(float *buffer, int64_t count) {
    return MPI_Allreduce(MPI_IN_PLACE, buffer, (int)count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
}
static inline int nnd_mpi_sum_doubles(double *buffer, int64_t count) {
    return MPI_Allreduce(MPI_IN_PLACE, buffer, (int)count, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
}
/// In-place maximum across all ranks.
static inline int nnd_mpi_max_int64(int64_t *buffer, int64_t count) {
    return MPI_Allreduce(MPI_IN_PLACE, buffer, (int)count, MPI_INT64_T, MPI_MAX, MPI_COMM_WORLD);
}
/// Every rank's `value` in rank order, on every rank (`all` has one slot per rank).
static inline int nnd_mpi_allgather_uint64(uint64_t value, uint64_t *all) {
    return MPI_Allgather(&value, 1, MPI_UINT64_T, all, 1, MPI_UINT64_T, MPI_COMM_WORLD);
}
/// Every rank's `bytes` bytes at `mine`, in rank order, on every rank (`all` holds size × bytes).
static inline int nnd_mpi_allgather_bytes(const void *mine, int bytes, void *all) {
    return MPI_Allgather(mine, bytes, MPI_BYTE, all, bytes, MPI_BYTE, MPI_COMM_WORLD);
}
static inline int nnd_mpi_barrier(void) { return MPI_Barrier(MPI_COMM_WORLD); }
static inline int nnd_mpi_abort(int code) { return MPI_Abort(MPI_COMM_WORLD, code); }
static inline double nnd_mpi_wtime(void) { return MPI_Wtime(); }
#endif
