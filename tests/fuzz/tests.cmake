# Fuzz target for safetensors header parsing (fuzz_safetensors_header.cpp), label `fuzz`.
# The project compiler is g++, which has no libFuzzer, so the target is compiled by a
# clang++ found here with one custom command (-fsanitize=fuzzer,address,undefined). It
# links only the parsing sources and header-only JSON / fmt (FMT_HEADER_ONLY), so no
# g++-built library crosses over. Skipped, with a configure message, without a clang++
# that can link -fsanitize=fuzzer.
find_program(SHARDQ_CLANGXX NAMES clang++ clang++-19 clang++-18 clang++-17 clang++-16 clang++-15 clang++-14)
if(SHARDQ_CLANGXX AND NOT DEFINED SHARDQ_FUZZ_CLANG_OK)
  set(_probe_dir ${CMAKE_BINARY_DIR}/tests/fuzz/probe)
  file(WRITE ${_probe_dir}/probe.cpp
       "#include <cstddef>\n#include <cstdint>\nextern \"C\" int LLVMFuzzerTestOneInput(const uint8_t*, size_t) { return 0; }\n")
  execute_process(COMMAND ${SHARDQ_CLANGXX} -fsanitize=fuzzer,address ${_probe_dir}/probe.cpp -o ${_probe_dir}/probe
                  RESULT_VARIABLE _probe_rc OUTPUT_QUIET ERROR_QUIET)
  if(_probe_rc EQUAL 0)
    set(SHARDQ_FUZZ_CLANG_OK ON CACHE INTERNAL "clang++ links -fsanitize=fuzzer")
  else()
    set(SHARDQ_FUZZ_CLANG_OK OFF CACHE INTERNAL "clang++ links -fsanitize=fuzzer")
  endif()
endif()

if(SHARDQ_CLANGXX AND SHARDQ_FUZZ_CLANG_OK)
  set(_fuzz_dir ${CMAKE_BINARY_DIR}/tests/fuzz)
  set(_fuzz_bin ${_fuzz_dir}/fuzz_safetensors_header)
  set(_fuzz_sources ${CMAKE_CURRENT_LIST_DIR}/fuzz_safetensors_header.cpp ${CMAKE_SOURCE_DIR}/common/safetensors_header.cpp
                    ${CMAKE_SOURCE_DIR}/common/json_text.cpp ${CMAKE_SOURCE_DIR}/common/dtype.cpp ${CMAKE_SOURCE_DIR}/common/tensor.cpp)
  set(_inc_json $<TARGET_PROPERTY:nlohmann_json::nlohmann_json,INTERFACE_INCLUDE_DIRECTORIES>)
  set(_inc_fmt $<TARGET_PROPERTY:fmt::fmt,INTERFACE_INCLUDE_DIRECTORIES>)
  add_custom_command(
    OUTPUT ${_fuzz_bin}
    COMMAND ${SHARDQ_CLANGXX} -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
            -DFMT_HEADER_ONLY -I${CMAKE_SOURCE_DIR} "$<$<BOOL:${_inc_json}>:-I$<JOIN:${_inc_json},;-I>>"
            "$<$<BOOL:${_inc_fmt}>:-I$<JOIN:${_inc_fmt},;-I>>" ${_fuzz_sources} -o ${_fuzz_bin}
    DEPENDS ${_fuzz_sources} ${CMAKE_SOURCE_DIR}/common/safetensors.hpp ${CMAKE_SOURCE_DIR}/common/dtype.hpp
            ${CMAKE_SOURCE_DIR}/common/error.hpp ${CMAKE_SOURCE_DIR}/common/tensor.hpp
            ${CMAKE_SOURCE_DIR}/common/json_text.hpp
    COMMAND_EXPAND_LISTS VERBATIM
    COMMENT "Building fuzz_safetensors_header with ${SHARDQ_CLANGXX} (libFuzzer)")
  add_custom_target(fuzz_safetensors_header ALL DEPENDS ${_fuzz_bin})
  # New inputs go to a scratch corpus in the build tree; the checked-in seeds stay read-only.
  add_test(NAME fuzz.safetensors_header
           COMMAND sh -c "rm -rf corpus_work && mkdir corpus_work && exec \"$0\" -max_total_time=20 -rss_limit_mb=2048 -dict=\"$1\" corpus_work \"$2\""
                   ${_fuzz_bin} ${CMAKE_CURRENT_LIST_DIR}/safetensors.dict ${CMAKE_CURRENT_LIST_DIR}/corpus
           WORKING_DIRECTORY ${_fuzz_dir})
  set_tests_properties(fuzz.safetensors_header PROPERTIES LABELS fuzz TIMEOUT 180)
else()
  message(STATUS "fuzz target skipped: no clang++ that links -fsanitize=fuzzer (g++ has no libFuzzer)")
endif()
