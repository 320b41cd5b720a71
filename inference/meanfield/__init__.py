"""The `meanfield` engine: fully factorised VI: CAVI / fixed-point updates."""
