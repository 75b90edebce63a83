#include "lockstep_mpi.h"
#include <mpi.h>
int lockstep_mpi_init(int requested, int *provided) { return MPI_Init_thread(NULL, NULL, requested, provided); }
int lockstep_mpi_finalize(void) { return MPI_Finalize(); }
int lockstep_mpi_initialized(void) { int flag = 0; MPI_Initialized(&flag); return flag; }
int lockstep_mpi_rank(int *rank) { return MPI_Comm_rank(MPI_COMM_WORLD, rank); }
int lockstep_mpi_size(int *size) { return MPI_Comm_size(MPI_COMM_WORLD, size); }
int lockstep_mpi_allreduce_sum_float(float *buffer, size_t count) {
    return MPI_Allreduce(MPI_IN_PLACE, buffer, (int)count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
}
