"""Numerical kernels shared by declarations (exact log-densities) and engines
(E-steps, queries): log-space chain passes, inside passes, tensor contractions.
Each kernel is a plain function on tensors with shapes in its docstring."""
