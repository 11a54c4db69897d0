#include "common.h"

namespace hilcore_bindings {
void register_mccl(py::module_& m) { (void)m; }
}  // namespace hilcore_bindings
