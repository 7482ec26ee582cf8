"""PoolChat benchmarks: the seed's per-session agents against the shared pool, side by side."""
