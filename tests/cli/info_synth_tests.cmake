# CLI tests of `shardq info` and `shardq synth`; the cases are in info_synth.sh. The 2e9-parameter
# synth (about 4 GB, over a minute here) is scripts/bench_synth_2b.sh, not a ctest.
foreach(_case info_corrupt info_table synth_deterministic synth_bad_args)
  add_test(NAME cli.${_case} COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/info_synth.sh ${_case})
  set_tests_properties(cli.${_case} PROPERTIES LABELS cli ENVIRONMENT "${SHARDQ_TEST_ENV}" TIMEOUT 120)
endforeach()
