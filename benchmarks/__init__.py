"""Benchmarks of ncsim against peer ODE solvers (workloads W1-W3); run with ``ncsim bench``."""
