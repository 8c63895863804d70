# CLI tests of `shardq convert llama2c` (tests/cli/convert_llama2c.sh).
add_test(NAME cli.convert_llama2c COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/convert_llama2c.sh)
set_tests_properties(cli.convert_llama2c PROPERTIES LABELS cli ENVIRONMENT "${SHARDQ_TEST_ENV}")
