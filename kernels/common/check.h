// Kernel preconditions that fail with the condition in words (in the style of faiss's
// FAISS_THROW_IF_NOT_MSG): HILCORE_CHECK_MSG(k2 <= k1, "k2 = " + std::to_string(k2) + ...) throws
// hilcore::KernelError, a std::invalid_argument (pybind11 raises it as ValueError) whose message is
//   jaccard_cpu: 'k2 <= k1' failed: k2 = 7, k1 = 5 (kernels/cpu/jaccard_cpu.cpp:170)
// i.e. the kernel, the condition as written, the values and the place. Checked on the host, before any
// parallel region; never inside one (an exception must not leave an OpenMP region or a CUDA kernel).
#pragma once
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <utility>

namespace hilcore {

class KernelError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

namespace detail {

// The path from "kernels/" on (CMake passes absolute source paths), or the path as given.
inline const char* short_path(const char* file) {
  const char* k = std::strstr(file, "kernels/");
  return k != nullptr ? k : file;
}

[[noreturn]] inline void check_failed(const char* func, const char* cond, const std::string& msg, const char* file,
                                      int line) {
  throw KernelError(std::string(func) + ": '" + cond + "' failed" + (msg.empty() ? "" : ": " + msg) + " (" +
                    short_path(file) + ":" + std::to_string(line) + ")");
}

}  // namespace detail

// "b = 3, c = 0" (a check's message listing the values it tested).
inline std::string values(std::initializer_list<std::pair<const char*, int64_t>> kv) {
  std::string out;
  for (const auto& p : kv) out += (out.empty() ? "" : ", ") + std::string(p.first) + " = " + std::to_string(p.second);
  return out;
}

}  // namespace hilcore

// `func` names the kernel entry point the caller called (not the helper the check sits in).
#define HILCORE_CHECK_MSG_IN(func, cond, msg)                                             \
  do {                                                                                    \
    if (!(cond)) ::hilcore::detail::check_failed((func), #cond, (msg), __FILE__, __LINE__); \
  } while (0)
#define HILCORE_CHECK_MSG(cond, msg) HILCORE_CHECK_MSG_IN(__func__, cond, msg)
#define HILCORE_CHECK(cond) HILCORE_CHECK_MSG_IN(__func__, cond, std::string())
