#ifndef LOCKSTEP_MPI_H
#define LOCKSTEP_MPI_H
#include <stdint.h>
#include <stddef.h>

/// Plain-function wrapper over OpenMPI: Swift cannot import MPI_COMM_WORLD, MPI_FLOAT or MPI_IN_PLACE
/// (macros over globals), so every MPI call Lockstep makes goes through here.
/// Every function returns an MPI error code (0 = MPI_SUCCESS) and reports results through pointers.

/// Thread-support levels (values of MPI_THREAD_SINGLE … MPI_THREAD_MULTIPLE), as plain ints.
extern const int lockstep_mpi_thread_single;
extern const int lockstep_mpi_thread_funneled;
extern const int lockstep_mpi_thread_serialized;
extern const int lockstep_mpi_thread_multiple;

/// MPI_SUCCESS.
extern const int lockstep_mpi_success;

/// Reduction operations for the int64 allreduce.
enum {
    LOCKSTEP_MPI_OP_SUM = 0,
    LOCKSTEP_MPI_OP_MIN = 1,
    LOCKSTEP_MPI_OP_MAX = 2,
};

/// Opaque storage for one MPI_Request; the caller owns the memory (no allocation inside the shim).
typedef struct lockstep_mpi_request {
    _Alignas(8) unsigned char opaque[16];
} lockstep_mpi_request;

/// MPI_Init_thread, then MPI_ERRORS_RETURN on the world communicator and a node-local communicator.
int lockstep_mpi_init(int requested_thread_level, int *provided_thread_level);
/// Frees the node-local communicator, then MPI_Finalize.
int lockstep_mpi_finalize(void);
/// Sets *flag to 1 when MPI_Init has been called.
int lockstep_mpi_initialized(int *flag);
/// Sets *flag to 1 when MPI_Finalize has been called.
int lockstep_mpi_finalized(int *flag);
/// Rank in MPI_COMM_WORLD.
int lockstep_mpi_rank(int *rank);
/// Size of MPI_COMM_WORLD.
int lockstep_mpi_size(int *size);
/// Rank among the processes sharing this node (MPI_COMM_TYPE_SHARED).
int lockstep_mpi_local_rank(int *rank);
/// Number of processes sharing this node.
int lockstep_mpi_local_size(int *size);

/// In-place sum over all ranks.
int lockstep_mpi_allreduce_sum_float(float *buffer, size_t count);
/// In-place sum over all ranks.
int lockstep_mpi_allreduce_sum_double(double *buffer, size_t count);
/// In-place reduction over all ranks; operation is one of LOCKSTEP_MPI_OP_*.
int lockstep_mpi_allreduce_int64(int64_t *buffer, size_t count, int operation);
/// Broadcasts `byte_count` bytes from `root` into `buffer` on every rank.
int lockstep_mpi_broadcast(void *buffer, size_t byte_count, int root);
/// Blocks until every rank has entered.
int lockstep_mpi_barrier(void);
/// Gathers `byte_count` bytes from each rank into `receive` (size × byte_count bytes) in rank order.
int lockstep_mpi_allgather(const void *send, size_t byte_count, void *receive);

/// Sums every rank's `send` (the blocks of all ranks back to back: counts[0] floats for rank 0, then counts[1], …)
/// and leaves this rank's block of the sum in `receive` (counts[rank] floats; must not overlap `send`).
int lockstep_mpi_reduce_scatter_sum_float(const float *send, float *receive, const int *counts);
/// In place: every rank holds its block at buffer + displacements[rank] (counts[rank] floats); afterwards every
/// rank holds every block.
int lockstep_mpi_allgatherv_float(float *buffer, const int *counts, const int *displacements);
/// Every rank sends block q of `send` (counts[q] floats at displacements[q]) to rank q; this rank receives its
/// block from every rank, in rank order, back to back in `receive` (size × counts[rank] floats).
int lockstep_mpi_alltoall_blocks_float(const float *send, const int *counts, const int *displacements, float *receive);
/// Rank `root` receives every rank's `count` floats of `send` at receive + displacements[rank] (counts[rank] =
/// that rank's count); `receive` is only read on the root.
int lockstep_mpi_gatherv_float(const float *send, int count, float *receive, const int *counts,
                               const int *displacements, int root);
/// Every rank receives its block (counts[rank] floats at displacements[rank]) of the root's `send` into `receive`;
/// `send` is only read on the root.
int lockstep_mpi_scatterv_float(const float *send, const int *counts, const int *displacements, float *receive,
                                int count, int root);

/// Starts a nonblocking in-place float sum; complete it with lockstep_mpi_test or lockstep_mpi_wait.
int lockstep_mpi_start_allreduce_sum_float(float *buffer, size_t count, lockstep_mpi_request *request);
/// Sets *completed to 1 when the request has finished (and drives MPI progress).
int lockstep_mpi_test(lockstep_mpi_request *request, int *completed);
/// Blocks until the request has finished.
int lockstep_mpi_wait(lockstep_mpi_request *request);

/// Opaque storage for one MPI_Win (node-shared memory); the caller owns it.
typedef struct lockstep_mpi_window {
    _Alignas(8) unsigned char opaque[16];
} lockstep_mpi_window;

/// Allocates `byte_count` bytes (rounded up to whole pages) that every process on this node can read and write
/// (MPI_Win_allocate_shared on the node communicator, one segment per local rank, each in its own pages);
/// collective over the node. *base is this process's segment, 64-byte aligned.
int lockstep_mpi_shared_allocate(size_t byte_count, void **base, lockstep_mpi_window *window);
/// Address in this process of local rank `local_rank`'s segment (64-byte aligned, as *base above), and the bytes
/// usable from there (segments may differ in size: each rank asks for its own).
int lockstep_mpi_shared_query(lockstep_mpi_window *window, int local_rank, void **base, size_t *byte_count);
/// Memory barrier, MPI_Barrier over the node, memory barrier: writes before it are visible to every local
/// rank's reads after it.
int lockstep_mpi_shared_synchronize(lockstep_mpi_window *window);
/// Frees the shared memory; collective over the node.
int lockstep_mpi_shared_free(lockstep_mpi_window *window);

/// Opaque storage for one MPI_Comm other than MPI_COMM_WORLD; the caller owns it.
typedef struct lockstep_mpi_comm {
    _Alignas(8) unsigned char opaque[16];
} lockstep_mpi_comm;

/// Splits the world into one communicator per local rank index: the ranks that hold local rank l on their node,
/// one per node, ordered by node (nodes ordered by the world rank of their local rank 0); collective over the
/// world. With equal ranks per node, *node_index is this rank's node and *node_count the number of nodes.
int lockstep_mpi_split_across_nodes(lockstep_mpi_comm *comm, int *node_index, int *node_count);
/// Sends `send_count` floats to rank `destination` of `comm` while receiving `receive_count` floats from rank
/// `source` (MPI_Sendrecv): both directions of a link at once, the step of a ring reduce-scatter or allgather.
int lockstep_mpi_comm_sendrecv_float(lockstep_mpi_comm *comm, const float *send, size_t send_count, int destination,
                                     float *receive, size_t receive_count, int source);
/// Exchanges with both neighbours of a chain at once (MPI_Irecv/MPI_Isend, then MPI_Waitall): sends to and
/// receives from ranks `previous` and `next` of `comm`; a negative rank or a zero count skips that transfer. Lets a
/// pipelined chain move data both ways along every link in the same step.
int lockstep_mpi_comm_neighbor_exchange_float(lockstep_mpi_comm *comm, int previous, int next,
                                              const float *send_previous, size_t send_previous_count,
                                              const float *send_next, size_t send_next_count,
                                              float *receive_previous, size_t receive_previous_count,
                                              float *receive_next, size_t receive_next_count);
/// Frees a communicator made by lockstep_mpi_split_across_nodes; collective over its ranks.
int lockstep_mpi_comm_free(lockstep_mpi_comm *comm);

/// MPI_Abort on the world communicator.
int lockstep_mpi_abort(int code);
/// Writes MPI_Error_string for `code` into `buffer` (NUL-terminated, truncated to `capacity`);
/// outside MPI_Init..MPI_Finalize, where OpenMPI would abort, writes a generic line instead.
int lockstep_mpi_error_string(int code, char *buffer, size_t capacity);

#endif
