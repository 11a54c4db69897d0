"""cuda_backend backend."""
