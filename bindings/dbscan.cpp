#include "common.h"

namespace hilcore_bindings {
void register_dbscan(py::module_& m) { (void)m; }
}  // namespace hilcore_bindings
