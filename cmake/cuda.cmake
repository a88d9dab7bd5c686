# CUDA back end: filled in by the CUDA issue. With AITS_CUDA=OFF or no CUDA
# torch, the extension is CPU-only.
set(AITS_CUDA_ENABLED 0)
