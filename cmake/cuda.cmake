# CUDA back end. Included by CMakeLists.txt after the targets _C and aits_torch
# exist; sets AITS_CUDA_ENABLED (0/1), recorded in aits/_build_config.py.
#
#   AITS_CUDA=AUTO (default)  CUDA back end when torch has CUDA and nvcc is found.
#   AITS_CUDA=ON              the same, but a build that cannot have it fails.
#   AITS_CUDA=OFF             CPU only, nvcc never looked at.
#
# With a CPU-only torch and nvcc present (CI here), the raw kernels
# (csrc/cuda/*.cu: cuda_runtime.h and gravity.h only) are still compiled, as an
# object library linked into nothing, so a CUDA syntax or type error fails the
# build. GPU architectures: CMAKE_CUDA_ARCHITECTURES, else the CUDAARCHS
# environment variable, else 80;90.
#
# find_package(Torch) is not used (ARCHITECTURE.md: it guesses the toolkit from
# the nvcc wrapper on the PATH, adds compute_50, and needs nvcc even for a CPU
# build). CMake's own CUDA language support finds nvcc, and the torch CUDA
# libraries are taken from torch/lib through aits_torch's link directories.

set(AITS_CUDA "AUTO" CACHE STRING "Build the CUDA back end: AUTO, ON or OFF")
set_property(CACHE AITS_CUDA PROPERTY STRINGS AUTO ON OFF)
string(TOUPPER "${AITS_CUDA}" _aits_cuda)
if(NOT _aits_cuda MATCHES "^(AUTO|ON|OFF)$")
  message(FATAL_ERROR "AITS_CUDA must be AUTO, ON or OFF, got '${AITS_CUDA}'.")
endif()

set(AITS_CUDA_ENABLED 0)
set(AITS_CUDA_KERNELS csrc/cuda/gravity_kernels.cu)

if(_aits_cuda STREQUAL "OFF")
  message(STATUS "aits: CUDA back end off (AITS_CUDA=OFF)")
  return()
endif()

if(_aits_cuda STREQUAL "ON" AND AITS_TORCH_CUDA STREQUAL "")
  message(FATAL_ERROR
    "\nAITS_CUDA=ON, but the torch being built against (${AITS_TORCH_VERSION}) has no CUDA.\n"
    "Install a CUDA build of torch, or build with AITS_CUDA=AUTO / OFF for the CPU back end.\n")
endif()

include(CheckLanguage)
check_language(CUDA)
if(NOT CMAKE_CUDA_COMPILER)
  if(_aits_cuda STREQUAL "ON")
    message(FATAL_ERROR
      "\nAITS_CUDA=ON, but no CUDA compiler (nvcc) was found.\n"
      "Put nvcc on the PATH, or point CUDACXX (or -DCMAKE_CUDA_COMPILER) at it.\n")
  endif()
  message(STATUS "aits: nvcc not found; CUDA back end and CUDA compile check skipped")
  return()
endif()

if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES AND NOT DEFINED ENV{CUDAARCHS})
  set(CMAKE_CUDA_ARCHITECTURES "80;90")
endif()
enable_language(CUDA)
set(CMAKE_CUDA_STANDARD 17)
set(CMAKE_CUDA_STANDARD_REQUIRED ON)

# The raw kernels: built in every build that has nvcc.
add_library(aits_cuda_kernels OBJECT ${AITS_CUDA_KERNELS})
target_include_directories(aits_cuda_kernels PRIVATE "${CMAKE_CURRENT_SOURCE_DIR}/csrc")
target_compile_options(aits_cuda_kernels PRIVATE -O3 -Xcompiler=-fno-math-errno)
set_target_properties(aits_cuda_kernels PROPERTIES
  POSITION_INDEPENDENT_CODE ON
  CUDA_VISIBILITY_PRESET hidden)

if(AITS_TORCH_CUDA STREQUAL "")
  message(STATUS "aits: torch ${AITS_TORCH_VERSION} has no CUDA: CUDA kernels compile-checked "
                 "(${CMAKE_CUDA_COMPILER}, architectures ${CMAKE_CUDA_ARCHITECTURES}), not linked")
  return()
endif()

# torch's CUDA and the toolkit's must share a major version (one libcudart).
string(REGEX MATCH "^[0-9]+" _torch_cuda_major "${AITS_TORCH_CUDA}")
string(REGEX MATCH "^[0-9]+" _nvcc_major "${CMAKE_CUDA_COMPILER_VERSION}")
if(NOT _torch_cuda_major STREQUAL _nvcc_major)
  set(_msg "torch ${AITS_TORCH_VERSION} uses CUDA ${AITS_TORCH_CUDA} but nvcc "
           "(${CMAKE_CUDA_COMPILER}) is CUDA ${CMAKE_CUDA_COMPILER_VERSION}; the major versions must match")
  if(_aits_cuda STREQUAL "ON")
    message(FATAL_ERROR "\nAITS_CUDA=ON: ${_msg}. Point CUDACXX at a matching nvcc.\n")
  endif()
  message(WARNING "aits: ${_msg}; building the CPU back end only.")
  return()
endif()

find_package(CUDAToolkit REQUIRED)
target_sources(_C PRIVATE csrc/cuda/backend_cuda.cpp)
target_link_libraries(_C PRIVATE aits_cuda_kernels CUDA::cudart c10_cuda torch_cuda)
# _C was created before enable_language(CUDA), so it did not take
# CMAKE_CUDA_ARCHITECTURES (CMake: "CUDA_ARCHITECTURES is empty for target _C").
set_target_properties(_C PROPERTIES CUDA_RUNTIME_LIBRARY Shared
                                    CUDA_ARCHITECTURES "${CMAKE_CUDA_ARCHITECTURES}")
set(AITS_CUDA_ENABLED 1)
message(STATUS "aits: CUDA back end enabled (torch CUDA ${AITS_TORCH_CUDA}, nvcc "
               "${CMAKE_CUDA_COMPILER_VERSION}, architectures ${CMAKE_CUDA_ARCHITECTURES})")
