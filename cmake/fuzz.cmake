# Fuzzing (README "Fuzzing"): the targets of fuzz/targets.h.
#  - fuzz_replay_tests (this gcc build, label fuzz): every file of
#    fuzz/corpus/<target>/ and fuzz/regressions/<target>/ through its target.
#  - The libFuzzer binaries build/fuzz/fuzz_<target>, built by clang with
#    ASan and UBSan in their own tree (fuzz/CMakeLists.txt, an
#    ExternalProject of this build, in ALL), and one bounded run of each as
#    the ctest fuzz.<target> (label fuzz, MOE_FUZZ_SECONDS each).
# Without a clang++ that links -fsanitize=fuzzer (Debian: clang and
# libclang-rt-14-dev, which ci/setup.sh installs) the libFuzzer part is left
# out with a message; MOE_FUZZ=OFF leaves it out on purpose.
option(MOE_FUZZ "Build the libFuzzer targets (clang) and run them in ctest" ON)
set(MOE_FUZZ_SECONDS 30 CACHE STRING "Seconds of each bounded fuzz run in ctest (fuzz.<target>)")
set(MOE_FUZZ_TARGETS safetensors_header case_file plan model_config run_result)

moe_test(fuzz_replay_tests LABELS fuzz
  SOURCES fuzz/replay_test.cpp fuzz/targets/temp_file.cpp fuzz/targets/safetensors_header.cpp
          fuzz/targets/case_file.cpp fuzz/targets/plan.cpp fuzz/targets/model_config.cpp
          fuzz/targets/run_result.cpp
  LIBS moe_suite)
target_compile_definitions(fuzz_replay_tests PRIVATE MOE_FUZZ_DIR="${PROJECT_SOURCE_DIR}/fuzz")

# Whole objects of the parsers in the layer archives, for the libFuzzer build.
include(${PROJECT_SOURCE_DIR}/fuzz/parser_sources.cmake)
foreach(src IN LISTS MOE_FUZZ_PARSER_SOURCES)
  get_filename_component(src_dir ${PROJECT_SOURCE_DIR}/${src} DIRECTORY)
  set_source_files_properties(${PROJECT_SOURCE_DIR}/${src} DIRECTORY ${src_dir}
                              PROPERTIES SKIP_UNITY_BUILD_INCLUSION ON)
endforeach()

if(NOT MOE_FUZZ)
  message(STATUS "moe-harness: libFuzzer targets: off (MOE_FUZZ=OFF)")
  return()
endif()
find_program(MOE_CLANGXX NAMES clang++ clang++-14 clang++-15 clang++-16)
# A clang without the libFuzzer runtime would break ALL: probe it once.
if(MOE_CLANGXX AND NOT DEFINED MOE_CLANG_HAS_LIBFUZZER)
  set(probe_dir ${CMAKE_BINARY_DIR}/fuzz_probe)
  file(WRITE ${probe_dir}/probe.cpp
    "#include <cstddef>\n#include <cstdint>\n"
    "extern \"C\" int LLVMFuzzerTestOneInput(const uint8_t*, size_t) { return 0; }\n")
  execute_process(
    COMMAND ${MOE_CLANGXX} -fsanitize=fuzzer,address,undefined ${probe_dir}/probe.cpp -o ${probe_dir}/probe
    RESULT_VARIABLE probe_rc OUTPUT_QUIET ERROR_QUIET)
  if(probe_rc EQUAL 0)
    set(MOE_CLANG_HAS_LIBFUZZER ON CACHE INTERNAL "clang++ links -fsanitize=fuzzer")
  else()
    set(MOE_CLANG_HAS_LIBFUZZER OFF CACHE INTERNAL "clang++ links -fsanitize=fuzzer")
  endif()
endif()
if(NOT MOE_CLANGXX OR NOT MOE_CLANG_HAS_LIBFUZZER)
  message(STATUS "moe-harness: libFuzzer targets: not built (no clang++ linking -fsanitize=fuzzer; "
                 "install clang and libclang-rt-14-dev, ci/setup.sh does); fuzz_replay_tests still run")
  return()
endif()
message(STATUS "moe-harness: libFuzzer targets: build/fuzz with ${MOE_CLANGXX}, ${MOE_FUZZ_SECONDS} s each in ctest")

# The layer archives the parsers need, highest layer first (link order).
set(fuzz_archive_targets moe_suite_archive moe_conformance_archive moe_reports_archive
  moe_launch_archive moe_checks_archive moe_parallel_archive moe_plan_archive moe_train_archive
  moe_placement_archive moe_model_archive moe_kernels moe_io_archive moe_mesh_archive
  moe_comm_archive moe_store_archive moe_common_archive)
set(fuzz_archives)
foreach(t IN LISTS fuzz_archive_targets)
  list(APPEND fuzz_archives "$<TARGET_FILE:${t}>")
endforeach()
string(REPLACE ";" "|" fuzz_archives "${fuzz_archives}")
set(fuzz_dir ${CMAKE_BINARY_DIR}/fuzz)
include(ExternalProject)
ExternalProject_Add(moe_fuzz
  SOURCE_DIR ${PROJECT_SOURCE_DIR}/fuzz
  BINARY_DIR ${fuzz_dir}
  PREFIX ${CMAKE_BINARY_DIR}/fuzz-ep
  LIST_SEPARATOR |
  CMAKE_ARGS -DCMAKE_CXX_COMPILER=${MOE_CLANGXX}
             -DTorch_DIR=${Torch_DIR}
             -DMOE_MAIN_BINARY_DIR=${CMAKE_BINARY_DIR}
             -DMOE_FUZZ_ARCHIVES=${fuzz_archives}
             -DMOE_WITH_NCCL=${MOE_WITH_NCCL}
  BUILD_ALWAYS ON  # its own ninja decides what is out of date (archives, sources)
  INSTALL_COMMAND ""
  DEPENDS ${fuzz_archive_targets})

foreach(target IN LISTS MOE_FUZZ_TARGETS)
  add_test(NAME fuzz.${target}
    COMMAND bash ${PROJECT_SOURCE_DIR}/fuzz/run_fuzzer.sh ${fuzz_dir}/fuzz_${target}
            ${PROJECT_SOURCE_DIR}/fuzz ${target} ${fuzz_dir}/work/${target} ${MOE_FUZZ_SECONDS})
  math(EXPR timeout "${MOE_FUZZ_SECONDS} + 90")
  set_tests_properties(fuzz.${target} PROPERTIES LABELS fuzz TIMEOUT ${timeout} PROCESSORS 1)
endforeach()
