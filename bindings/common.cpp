#include "common.h"

#include <omp.h>

namespace hilcore_bindings {
int num_threads() { return omp_get_max_threads(); }
}  // namespace hilcore_bindings
