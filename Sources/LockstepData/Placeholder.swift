import CZlib
func _probe() { _ = zlibVersion() }
