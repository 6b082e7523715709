# cmake -DAR=ar -DIN=lib.a -DOUT=copy.a -DMEMBERS="a.cpp.o;b.cpp.o" -P filter_archive.cmake
# Copies a layer archive of the main build without the members the fuzz
# build compiles itself (instrumented), so every symbol is defined once and
# every plug-in still registers once. A member that is not in the archive is
# an error: the source list of fuzz/CMakeLists.txt is out of date.
cmake_minimum_required(VERSION 3.22)  # IN_LIST
execute_process(COMMAND ${AR} t ${IN} OUTPUT_VARIABLE listing RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "cannot list ${IN}")
endif()
string(REPLACE "\n" ";" listing "${listing}")
foreach(m IN LISTS MEMBERS)
  if(NOT m IN_LIST listing)
    message(FATAL_ERROR "${IN} has no member ${m} (fuzz/CMakeLists.txt: MOE_FUZZ_PARSER_SOURCES)")
  endif()
endforeach()
file(COPY_FILE ${IN} ${OUT}.tmp)
if(MEMBERS)
  execute_process(COMMAND ${AR} d ${OUT}.tmp ${MEMBERS} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "ar d ${OUT}.tmp ${MEMBERS} failed")
  endif()
endif()
file(RENAME ${OUT}.tmp ${OUT})
