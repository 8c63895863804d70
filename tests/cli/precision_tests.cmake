# CLI tests of the precision policies lim / zd / random / sensitivity (precision_tests.sh).
# Included by tests/cli/tests.cmake.
foreach(_case policies_stories policies_synth determinism errors)
  add_test(NAME cli.precision_${_case} COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/precision_tests.sh ${_case})
  set_tests_properties(cli.precision_${_case} PROPERTIES LABELS cli ENVIRONMENT "${SHARDQ_TEST_ENV}" TIMEOUT 600)
endforeach()
set_tests_properties(cli.precision_determinism PROPERTIES LABELS "cli;mpi" PROCESSORS 2)
