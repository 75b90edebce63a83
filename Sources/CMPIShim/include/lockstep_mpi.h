#ifndef LOCKSTEP_MPI_H
#define LOCKSTEP_MPI_H
#include <stdint.h>
#include <stddef.h>
/// Plain-function wrapper over OpenMPI: Swift cannot import MPI_COMM_WORLD or MPI_FLOAT (macros over globals).
/// Every function returns an MPI error code (0 = success) unless noted.
int lockstep_mpi_init(int requested_thread_level, int *provided);
int lockstep_mpi_finalize(void);
int lockstep_mpi_initialized(void);
int lockstep_mpi_rank(int *rank);
int lockstep_mpi_size(int *size);
int lockstep_mpi_allreduce_sum_float(float *buffer, size_t count);
#endif
