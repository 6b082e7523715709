# Finds libtorch and checks that the build uses exactly one of them.
#
# Where libtorch comes from, first match wins:
#  1. -DTorch_DIR=... (or Torch_DIR in the environment): that libtorch;
#  2. a libtorch on CMAKE_PREFIX_PATH (cache or environment);
#  3. the project's virtual environment (.venv, made by ci/setup.sh, or
#     -DMOE_PYTHON=/path/to/python): torch.utils.cmake_prefix_path.
# In every case the torch package directory itself (TORCH_INSTALL_PREFIX,
# holding lib/) goes first on CMAKE_PREFIX_PATH: TorchConfig.cmake looks its
# libraries up with find_library(... PATHS <prefix>/lib), which searches the
# system directories before PATHS, so on a machine with Debian's libtorch-dev
# a plain find_package(Torch) mixes /usr/lib/x86_64-linux-gnu/libtorch.so
# into another libtorch's targets. After find_package every torch and c10
# library is checked to lie under that prefix.
#
# Sets MOE_TORCH_VERSION, MOE_TORCH_PREFIX, MOE_TORCH_HAS_CUDA and
# MOE_TORCH_NCCL_INCLUDE_DIR (the nccl.h matching the NCCL libtorch links,
# empty when libtorch has no NCCL).

set(MOE_TORCH_MIN_VERSION 2.15.0 CACHE STRING "Oldest libtorch the harness builds with")
set(MOE_PYTHON "${PROJECT_SOURCE_DIR}/.venv/bin/python" CACHE FILEPATH
    "Python of the environment whose torch package provides libtorch")

set(_moe_torch_source "")
if(Torch_DIR AND Torch_DIR STREQUAL _MOE_TORCH_DIR_FROM_PYTHON)
  set(_moe_torch_source "${MOE_PYTHON}")  # chosen below on the first configure
elseif(Torch_DIR OR DEFINED ENV{Torch_DIR})
  set(_moe_torch_source "Torch_DIR")
else()
  find_file(_moe_torch_cfg NAMES TorchConfig.cmake PATH_SUFFIXES share/cmake/Torch lib/cmake/Torch
            NO_DEFAULT_PATH PATHS ${CMAKE_PREFIX_PATH} $ENV{CMAKE_PREFIX_PATH})
  if(_moe_torch_cfg)
    set(_moe_torch_source "CMAKE_PREFIX_PATH")
  elseif(EXISTS "${MOE_PYTHON}")
    execute_process(
      COMMAND "${MOE_PYTHON}" -c "import torch.utils; print(torch.utils.cmake_prefix_path)"
      OUTPUT_VARIABLE _moe_py_prefix OUTPUT_STRIP_TRAILING_WHITESPACE
      ERROR_VARIABLE _moe_py_err RESULT_VARIABLE _moe_py_rc)
    if(NOT _moe_py_rc EQUAL 0)
      message(FATAL_ERROR "moe-harness: ${MOE_PYTHON} cannot import torch (run ci/setup.sh): ${_moe_py_err}")
    endif()
    set(Torch_DIR "${_moe_py_prefix}/Torch" CACHE PATH "" FORCE)
    set(_MOE_TORCH_DIR_FROM_PYTHON "${_moe_py_prefix}/Torch" CACHE INTERNAL "")
    set(_moe_torch_source "${MOE_PYTHON}")
  else()
    message(FATAL_ERROR "moe-harness: no libtorch: run ci/setup.sh (creates .venv with torch), "
                        "or pass -DTorch_DIR=<libtorch>/share/cmake/Torch or CMAKE_PREFIX_PATH")
  endif()
endif()

# The torch package directory (TORCH_INSTALL_PREFIX of TorchConfig.cmake).
if(Torch_DIR)
  set(_moe_cfg_dir "${Torch_DIR}")
elseif(DEFINED ENV{Torch_DIR})
  set(_moe_cfg_dir "$ENV{Torch_DIR}")
else()
  get_filename_component(_moe_cfg_dir "${_moe_torch_cfg}" DIRECTORY)
endif()
get_filename_component(MOE_TORCH_PREFIX "${_moe_cfg_dir}/../../.." ABSOLUTE)
list(PREPEND CMAKE_PREFIX_PATH "${MOE_TORCH_PREFIX}")

# A CUDA libtorch enables the CUDA language in its config: use the toolkit
# under /usr/local/cuda when nvcc is not on PATH.
if(NOT CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX} AND EXISTS /usr/local/cuda/bin/nvcc)
  find_program(_moe_nvcc nvcc)
  if(NOT _moe_nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
endif()

find_package(Torch REQUIRED)
set(MOE_TORCH_VERSION "${Torch_VERSION}")
if(NOT MOE_TORCH_VERSION)
  set(MOE_TORCH_VERSION "unknown")
endif()
if(MOE_TORCH_VERSION STREQUAL "unknown" OR MOE_TORCH_VERSION VERSION_LESS MOE_TORCH_MIN_VERSION)
  message(FATAL_ERROR "moe-harness: libtorch ${MOE_TORCH_VERSION} found in ${MOE_TORCH_PREFIX}; "
                      "the harness needs libtorch >= ${MOE_TORCH_MIN_VERSION} (run ci/setup.sh for the "
                      "pinned one, or point Torch_DIR at another)")
endif()

# Every torch/c10 library must come from MOE_TORCH_PREFIX.
set(_moe_torch_libs)
foreach(_lib IN LISTS TORCH_LIBRARIES)
  if(TARGET ${_lib})
    get_target_property(_type ${_lib} TYPE)
    if(NOT _type STREQUAL "INTERFACE_LIBRARY")
      get_target_property(_loc ${_lib} IMPORTED_LOCATION_RELEASE)
      if(NOT _loc)
        get_target_property(_loc ${_lib} IMPORTED_LOCATION)
      endif()
      if(_loc)
        list(APPEND _moe_torch_libs "${_loc}")
      endif()
    endif()
  elseif(IS_ABSOLUTE "${_lib}")
    list(APPEND _moe_torch_libs "${_lib}")
  endif()
endforeach()
foreach(_var TORCH_LIBRARY C10_LIBRARY C10_CUDA_LIBRARY torch_cpu_LIBRARY torch_cuda_LIBRARY)
  if(${_var})
    list(APPEND _moe_torch_libs "${${_var}}")
  endif()
endforeach()
set(_moe_mixed)
foreach(_loc IN LISTS _moe_torch_libs)
  get_filename_component(_name "${_loc}" NAME)
  if(_name MATCHES "^lib(torch|c10)" )
    get_filename_component(_real "${_loc}" REALPATH)
    file(REAL_PATH "${MOE_TORCH_PREFIX}" _real_prefix)
    string(FIND "${_real}" "${_real_prefix}/" _at)
    if(NOT _at EQUAL 0)
      list(APPEND _moe_mixed "${_loc}")
    endif()
  endif()
endforeach()
if(_moe_mixed)
  list(REMOVE_DUPLICATES _moe_mixed)
  string(REPLACE ";" ", " _moe_mixed "${_moe_mixed}")
  message(FATAL_ERROR "moe-harness: libtorch ${MOE_TORCH_VERSION} in ${MOE_TORCH_PREFIX} was found, but "
                      "these torch/c10 libraries come from elsewhere: ${_moe_mixed}. Two libtorch copies in "
                      "one process are undefined behaviour; clear the cache (rm -rf build) or fix "
                      "CMAKE_PREFIX_PATH / Torch_DIR.")
endif()

# CUDA and NCCL compiled into libtorch.
set(MOE_TORCH_HAS_CUDA OFF)
if(TARGET torch_cuda OR C10_CUDA_LIBRARY)
  set(MOE_TORCH_HAS_CUDA ON)
endif()
set(MOE_TORCH_NCCL_INCLUDE_DIR "")
if(MOE_TORCH_HAS_CUDA AND EXISTS "${MOE_TORCH_PREFIX}/include/torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp")
  # The pip wheel takes NCCL from the nvidia-nccl package next to torch;
  # a libtorch built from source may carry nccl.h in its own include dir.
  find_path(MOE_TORCH_NCCL_H_DIR nccl.h NO_DEFAULT_PATH
            PATHS "${MOE_TORCH_PREFIX}/../nvidia/nccl/include" "${MOE_TORCH_PREFIX}/include")
  if(MOE_TORCH_NCCL_H_DIR)
    get_filename_component(MOE_TORCH_NCCL_INCLUDE_DIR "${MOE_TORCH_NCCL_H_DIR}" ABSOLUTE)
  endif()
endif()
message(STATUS "moe-harness: libtorch ${MOE_TORCH_VERSION} from ${MOE_TORCH_PREFIX} (via ${_moe_torch_source})")

# The directories of the libraries libtorch loads (the wheel's nvidia-*
# packages: cudart, NCCL, cuBLAS, ...). They go first on the link and run
# paths of every project binary: otherwise the linker resolves libtorch_cuda's
# libnccl.so.2 in the CUDA toolkit (an older NCCL, missing symbols) and the
# loader maps the toolkit's libcudart.so.13 for the executable before
# libtorch_cuda asks for its own.
set(MOE_TORCH_RUNTIME_DIRS "${MOE_TORCH_PREFIX}/lib")
file(GLOB _moe_nvidia_dirs LIST_DIRECTORIES true "${MOE_TORCH_PREFIX}/../nvidia/*/lib")
foreach(_dir IN LISTS _moe_nvidia_dirs)
  get_filename_component(_dir "${_dir}" ABSOLUTE)
  list(APPEND MOE_TORCH_RUNTIME_DIRS "${_dir}")
endforeach()
# The NCCL libtorch links, for the one-library test.
set(MOE_TORCH_NCCL_LIBRARY "")
if(MOE_TORCH_HAS_CUDA)
  find_file(MOE_TORCH_NCCL_LIBRARY_FILE libnccl.so.2 NO_DEFAULT_PATH PATHS ${MOE_TORCH_RUNTIME_DIRS})
  if(MOE_TORCH_NCCL_LIBRARY_FILE)
    get_filename_component(MOE_TORCH_NCCL_LIBRARY "${MOE_TORCH_NCCL_LIBRARY_FILE}" REALPATH)
  endif()
endif()
