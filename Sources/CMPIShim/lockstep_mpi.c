#include "lockstep_mpi.h"
#include <mpi.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

const int lockstep_mpi_thread_single = MPI_THREAD_SINGLE;
const int lockstep_mpi_thread_funneled = MPI_THREAD_FUNNELED;
const int lockstep_mpi_thread_serialized = MPI_THREAD_SERIALIZED;
const int lockstep_mpi_thread_multiple = MPI_THREAD_MULTIPLE;
const int lockstep_mpi_success = MPI_SUCCESS;

_Static_assert(sizeof(MPI_Win) <= sizeof(((lockstep_mpi_window *)0)->opaque),
               "lockstep_mpi_window too small for this MPI's MPI_Win");
_Static_assert(sizeof(MPI_Comm) <= sizeof(((lockstep_mpi_comm *)0)->opaque),
               "lockstep_mpi_comm too small for this MPI's MPI_Comm");
_Static_assert(sizeof(MPI_Request) <= sizeof(((lockstep_mpi_request *)0)->opaque),
               "lockstep_mpi_request too small for this MPI's MPI_Request");

// Processes on the same node; kept for the whole run so local rank/size are cheap queries.
static MPI_Comm local_comm = MPI_COMM_NULL;

// MPI counts are int; refuse larger buffers rather than silently truncating.
#define CHECK_COUNT(count) do { if ((count) > (size_t)INT_MAX) return MPI_ERR_COUNT; } while (0)

int lockstep_mpi_init(int requested, int *provided) {
    int rc = MPI_Init_thread(NULL, NULL, requested, provided);
    if (rc != MPI_SUCCESS) return rc;
    // Errors come back as codes so Swift can throw with rank and context instead of the default abort.
    rc = MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    if (rc != MPI_SUCCESS) return rc;
    rc = MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local_comm);
    if (rc != MPI_SUCCESS) return rc;
    return MPI_Comm_set_errhandler(local_comm, MPI_ERRORS_RETURN);
}

int lockstep_mpi_finalize(void) {
    if (local_comm != MPI_COMM_NULL) {
        int rc = MPI_Comm_free(&local_comm);
        if (rc != MPI_SUCCESS) return rc;
    }
    return MPI_Finalize();
}

int lockstep_mpi_initialized(int *flag) { return MPI_Initialized(flag); }
int lockstep_mpi_finalized(int *flag) { return MPI_Finalized(flag); }
int lockstep_mpi_rank(int *rank) { return MPI_Comm_rank(MPI_COMM_WORLD, rank); }
int lockstep_mpi_size(int *size) { return MPI_Comm_size(MPI_COMM_WORLD, size); }

int lockstep_mpi_local_rank(int *rank) {
    if (local_comm == MPI_COMM_NULL) return MPI_ERR_COMM;
    return MPI_Comm_rank(local_comm, rank);
}

int lockstep_mpi_local_size(int *size) {
    if (local_comm == MPI_COMM_NULL) return MPI_ERR_COMM;
    return MPI_Comm_size(local_comm, size);
}

// MPI_IN_PLACE everywhere: passing the same buffer as send and receive is erroneous and aborts.
int lockstep_mpi_allreduce_sum_float(float *buffer, size_t count) {
    CHECK_COUNT(count);
    return MPI_Allreduce(MPI_IN_PLACE, buffer, (int)count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
}

int lockstep_mpi_allreduce_sum_double(double *buffer, size_t count) {
    CHECK_COUNT(count);
    return MPI_Allreduce(MPI_IN_PLACE, buffer, (int)count, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
}

int lockstep_mpi_allreduce_int64(int64_t *buffer, size_t count, int operation) {
    CHECK_COUNT(count);
    MPI_Op op;
    switch (operation) {
    case LOCKSTEP_MPI_OP_SUM: op = MPI_SUM; break;
    case LOCKSTEP_MPI_OP_MIN: op = MPI_MIN; break;
    case LOCKSTEP_MPI_OP_MAX: op = MPI_MAX; break;
    default: return MPI_ERR_OP;
    }
    return MPI_Allreduce(MPI_IN_PLACE, buffer, (int)count, MPI_INT64_T, op, MPI_COMM_WORLD);
}

int lockstep_mpi_broadcast(void *buffer, size_t byte_count, int root) {
    CHECK_COUNT(byte_count);
    return MPI_Bcast(buffer, (int)byte_count, MPI_BYTE, root, MPI_COMM_WORLD);
}

int lockstep_mpi_barrier(void) { return MPI_Barrier(MPI_COMM_WORLD); }

int lockstep_mpi_allgather(const void *send, size_t byte_count, void *receive) {
    CHECK_COUNT(byte_count);
    return MPI_Allgather(send, (int)byte_count, MPI_BYTE, receive, (int)byte_count, MPI_BYTE, MPI_COMM_WORLD);
}

int lockstep_mpi_reduce_scatter_sum_float(const float *send, float *receive, const int *counts) {
    return MPI_Reduce_scatter(send, receive, counts, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
}

int lockstep_mpi_allgatherv_float(float *buffer, const int *counts, const int *displacements) {
    return MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buffer, counts, displacements, MPI_FLOAT, MPI_COMM_WORLD);
}

int lockstep_mpi_alltoall_blocks_float(const float *send, const int *counts, const int *displacements, float *receive) {
    int rank = 0, size = 0;
    int rc = MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (rc != MPI_SUCCESS) return rc;
    rc = MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (rc != MPI_SUCCESS) return rc;
    // Every rank's copy of this rank's block, back to back: receive counts and offsets follow from counts[rank].
    int receive_counts[size], receive_displacements[size];
    for (int peer = 0; peer < size; peer++) {
        if ((size_t)counts[rank] * (size_t)peer > (size_t)INT_MAX) return MPI_ERR_COUNT;
        receive_counts[peer] = counts[rank];
        receive_displacements[peer] = counts[rank] * peer;
    }
    return MPI_Alltoallv(send, counts, displacements, MPI_FLOAT, receive, receive_counts, receive_displacements,
                         MPI_FLOAT, MPI_COMM_WORLD);
}

int lockstep_mpi_gatherv_float(const float *send, int count, float *receive, const int *counts,
                               const int *displacements, int root) {
    return MPI_Gatherv(send, count, MPI_FLOAT, receive, counts, displacements, MPI_FLOAT, root, MPI_COMM_WORLD);
}

int lockstep_mpi_scatterv_float(const float *send, const int *counts, const int *displacements, float *receive,
                                int count, int root) {
    return MPI_Scatterv(send, counts, displacements, MPI_FLOAT, receive, count, MPI_FLOAT, root, MPI_COMM_WORLD);
}

// MPI_Request is copied in and out of caller-owned storage so the shim holds no per-request state.
int lockstep_mpi_start_allreduce_sum_float(float *buffer, size_t count, lockstep_mpi_request *request) {
    CHECK_COUNT(count);
    MPI_Request handle = MPI_REQUEST_NULL;
    int rc = MPI_Iallreduce(MPI_IN_PLACE, buffer, (int)count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &handle);
    memcpy(request->opaque, &handle, sizeof handle);
    return rc;
}

int lockstep_mpi_test(lockstep_mpi_request *request, int *completed) {
    MPI_Request handle;
    memcpy(&handle, request->opaque, sizeof handle);
    int rc = MPI_Test(&handle, completed, MPI_STATUS_IGNORE);
    memcpy(request->opaque, &handle, sizeof handle);
    return rc;
}

int lockstep_mpi_wait(lockstep_mpi_request *request) {
    MPI_Request handle;
    memcpy(&handle, request->opaque, sizeof handle);
    int rc = MPI_Wait(&handle, MPI_STATUS_IGNORE);
    memcpy(request->opaque, &handle, sizeof handle);
    return rc;
}

static void *align_cache_line(void *address) {
    return (void *)(((uintptr_t)address + 63) & ~(uintptr_t)63);
}

int lockstep_mpi_shared_allocate(size_t byte_count, void **base, lockstep_mpi_window *window) {
    if (local_comm == MPI_COMM_NULL) return MPI_ERR_COMM;
    // OpenMPI puts a small header before each segment (measured: 0x108 bytes into the page); 64 spare bytes let
    // every segment start on a cache line.
    size_t page = 4096;
    size_t bytes = (byte_count + 64 + page - 1) / page * page;
    CHECK_COUNT(bytes);
    MPI_Info info;
    int rc = MPI_Info_create(&info);
    if (rc != MPI_SUCCESS) return rc;
    // Each rank's segment in its own pages: no false sharing at the seams, and first touch by the owner.
    rc = MPI_Info_set(info, "alloc_shared_noncontig", "true");
    MPI_Win handle = MPI_WIN_NULL;
    if (rc == MPI_SUCCESS) rc = MPI_Win_allocate_shared((MPI_Aint)bytes, 1, info, local_comm, base, &handle);
    MPI_Info_free(&info);
    if (rc != MPI_SUCCESS) return rc;
    *base = align_cache_line(*base);
    rc = MPI_Win_set_errhandler(handle, MPI_ERRORS_RETURN);
    // One passive-target epoch for the window's lifetime: loads and stores need only MPI_Win_sync after that.
    if (rc == MPI_SUCCESS) rc = MPI_Win_lock_all(MPI_MODE_NOCHECK, handle);
    memcpy(window->opaque, &handle, sizeof handle);
    return rc;
}

int lockstep_mpi_shared_query(lockstep_mpi_window *window, int local_rank, void **base, size_t *byte_count) {
    MPI_Win handle;
    memcpy(&handle, window->opaque, sizeof handle);
    MPI_Aint size = 0;
    int unit = 0;
    int rc = MPI_Win_shared_query(handle, local_rank, &size, &unit, base);
    if (rc != MPI_SUCCESS) return rc;
    char *start = *base;
    *base = align_cache_line(start);
    size_t skipped = (size_t)((char *)*base - start);
    *byte_count = (size_t)size > skipped ? (size_t)size - skipped : 0;
    return rc;
}

int lockstep_mpi_shared_synchronize(lockstep_mpi_window *window) {
    MPI_Win handle;
    memcpy(&handle, window->opaque, sizeof handle);
    int rc = MPI_Win_sync(handle);
    if (rc == MPI_SUCCESS) rc = MPI_Barrier(local_comm);
    if (rc == MPI_SUCCESS) rc = MPI_Win_sync(handle);
    return rc;
}

int lockstep_mpi_shared_free(lockstep_mpi_window *window) {
    MPI_Win handle;
    memcpy(&handle, window->opaque, sizeof handle);
    int rc = MPI_Win_unlock_all(handle);
    if (rc != MPI_SUCCESS) return rc;
    rc = MPI_Win_free(&handle);
    memcpy(window->opaque, &handle, sizeof handle);
    return rc;
}

int lockstep_mpi_split_across_nodes(lockstep_mpi_comm *comm, int *node_index, int *node_count) {
    MPI_Comm handle = MPI_COMM_NULL;
    memcpy(comm->opaque, &handle, sizeof handle);
    if (local_comm == MPI_COMM_NULL) return MPI_ERR_COMM;
    int world_rank = 0, local_rank = 0;
    int rc = MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
    if (rc != MPI_SUCCESS) return rc;
    rc = MPI_Comm_rank(local_comm, &local_rank);
    if (rc != MPI_SUCCESS) return rc;
    // The world rank of the node's local rank 0 names the node and orders the nodes the same way in every split.
    int node_leader = world_rank;
    rc = MPI_Bcast(&node_leader, 1, MPI_INT, 0, local_comm);
    if (rc != MPI_SUCCESS) return rc;
    rc = MPI_Comm_split(MPI_COMM_WORLD, local_rank, node_leader, &handle);
    if (rc != MPI_SUCCESS) return rc;
    memcpy(comm->opaque, &handle, sizeof handle);
    rc = MPI_Comm_set_errhandler(handle, MPI_ERRORS_RETURN);
    if (rc != MPI_SUCCESS) return rc;
    rc = MPI_Comm_rank(handle, node_index);
    if (rc != MPI_SUCCESS) return rc;
    return MPI_Comm_size(handle, node_count);
}

int lockstep_mpi_comm_sendrecv_float(lockstep_mpi_comm *comm, const float *send, size_t send_count, int destination,
                                     float *receive, size_t receive_count, int source) {
    CHECK_COUNT(send_count);
    CHECK_COUNT(receive_count);
    MPI_Comm handle;
    memcpy(&handle, comm->opaque, sizeof handle);
    if (handle == MPI_COMM_NULL) return MPI_ERR_COMM;
    return MPI_Sendrecv(send, (int)send_count, MPI_FLOAT, destination, 0, receive, (int)receive_count, MPI_FLOAT,
                        source, 0, handle, MPI_STATUS_IGNORE);
}

int lockstep_mpi_comm_neighbor_exchange_float(lockstep_mpi_comm *comm, int previous, int next,
                                              const float *send_previous, size_t send_previous_count,
                                              const float *send_next, size_t send_next_count,
                                              float *receive_previous, size_t receive_previous_count,
                                              float *receive_next, size_t receive_next_count) {
    CHECK_COUNT(send_previous_count);
    CHECK_COUNT(send_next_count);
    CHECK_COUNT(receive_previous_count);
    CHECK_COUNT(receive_next_count);
    MPI_Comm handle;
    memcpy(&handle, comm->opaque, sizeof handle);
    if (handle == MPI_COMM_NULL) return MPI_ERR_COMM;
    // Tags tell the directions apart: toward higher positions 1, toward lower 2.
    MPI_Request requests[4] = {MPI_REQUEST_NULL, MPI_REQUEST_NULL, MPI_REQUEST_NULL, MPI_REQUEST_NULL};
    int rc = MPI_SUCCESS;
    if (previous >= 0 && receive_previous_count > 0)
        rc = MPI_Irecv(receive_previous, (int)receive_previous_count, MPI_FLOAT, previous, 1, handle, &requests[0]);
    if (rc == MPI_SUCCESS && next >= 0 && receive_next_count > 0)
        rc = MPI_Irecv(receive_next, (int)receive_next_count, MPI_FLOAT, next, 2, handle, &requests[1]);
    if (rc == MPI_SUCCESS && next >= 0 && send_next_count > 0)
        rc = MPI_Isend(send_next, (int)send_next_count, MPI_FLOAT, next, 1, handle, &requests[2]);
    if (rc == MPI_SUCCESS && previous >= 0 && send_previous_count > 0)
        rc = MPI_Isend(send_previous, (int)send_previous_count, MPI_FLOAT, previous, 2, handle, &requests[3]);
    if (rc != MPI_SUCCESS) return rc;  // the job is ending: the caller reports the code and aborts
    return MPI_Waitall(4, requests, MPI_STATUSES_IGNORE);
}

int lockstep_mpi_comm_free(lockstep_mpi_comm *comm) {
    MPI_Comm handle;
    memcpy(&handle, comm->opaque, sizeof handle);
    if (handle == MPI_COMM_NULL) return MPI_SUCCESS;
    int rc = MPI_Comm_free(&handle);
    memcpy(comm->opaque, &handle, sizeof handle);
    return rc;
}

int lockstep_mpi_abort(int code) { return MPI_Abort(MPI_COMM_WORLD, code); }

int lockstep_mpi_error_string(int code, char *buffer, size_t capacity) {
    if (capacity == 0) return MPI_ERR_ARG;
    // OpenMPI aborts the process if MPI_Error_string runs outside Init..Finalize; report that instead.
    int initialized = 0, finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    if (!initialized || finalized) {
        snprintf(buffer, capacity, "MPI error %d (no text: MPI is %s)", code, initialized ? "finalized" : "not initialized");
        return MPI_SUCCESS;
    }
    char text[MPI_MAX_ERROR_STRING];
    int length = 0;
    int rc = MPI_Error_string(code, text, &length);
    if (rc != MPI_SUCCESS) { buffer[0] = '\0'; return rc; }
    size_t n = (size_t)length < capacity - 1 ? (size_t)length : capacity - 1;
    memcpy(buffer, text, n);
    buffer[n] = '\0';
    return MPI_SUCCESS;
}
