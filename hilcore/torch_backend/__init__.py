"""torch_backend backend."""
