"""pytest-benchmark suites (CPU and GPU) and the scripts that run and summarise them on the device machine."""
