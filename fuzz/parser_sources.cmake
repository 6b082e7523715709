# The parser sources the libFuzzer build compiles itself, instrumented
# (fuzz/CMakeLists.txt), and removes by object name from the main build's
# layer archives. The main build therefore keeps them out of its unity
# batches (cmake/fuzz.cmake), so each stays its own <file>.o member.
set(MOE_FUZZ_PARSER_SOURCES
  reference/io/safetensors_header.cpp
  reference/io/safetensors.cpp
  reference/model/config.cpp
  reference/plan/plan.cpp
  harness/conformance/run_result.cpp
  harness/suite/json_schema.cpp
  harness/suite/case_file.cpp)
