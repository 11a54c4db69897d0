// Translation unit that keeps the CPU kernel library non-empty; per-op kernels live beside it.
namespace hilcore { int cpu_kernels_version() { return 1; } }
