// Versions of the CUDA driver present at run time and of the toolkit hilcore was
// built with, so the Python layer can report the CUDA backend unavailable (and
// `auto` fall back) instead of failing at the first launch on an older driver.
#include <cuda_runtime.h>

#include "cuda/launchers.h"

namespace hilcore {
namespace cuda {

int driver_version() {
  int v = 0;
  if (cudaDriverGetVersion(&v) != cudaSuccess) return -1;
  return v;  // 0: no driver installed
}

int runtime_version_built() { return CUDART_VERSION; }

}  // namespace cuda
}  // namespace hilcore
