import CMPIShim
func _probe() { var r: Int32 = 0; _ = lockstep_mpi_rank(&r) }
