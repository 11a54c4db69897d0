"""native_backend backend."""
