# CLI tests (label cli): each tests/cli/<name>_tests.cmake registers its own tests.
file(GLOB SHARDQ_CLI_TEST_CMAKE CONFIGURE_DEPENDS ${CMAKE_CURRENT_LIST_DIR}/*_tests.cmake)
foreach(f ${SHARDQ_CLI_TEST_CMAKE})
  include(${f})
endforeach()
