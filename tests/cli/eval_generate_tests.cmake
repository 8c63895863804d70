# CLI tests of `shardq eval` and `shardq generate` on the real llama2.c models (converted to
# HF layout first): run.c's golden text byte for byte, and eval's JSON on TinyStories.
# Included by tests/cli/tests.cmake; the cases are in eval_generate_tests.sh.
set(_sq_cli_script ${CMAKE_CURRENT_LIST_DIR}/eval_generate_tests.sh)
foreach(_case
    "generate_stories260K_greedy_n256"
    "generate_stories260K_greedy_once_upon"
    "generate_babyllama_greedy_n256"
    "generate_babyllama_greedy_once_upon"
    "generate_json_and_errors"
    "eval_stories260K_json")
  add_test(NAME cli.${_case} COMMAND bash ${_sq_cli_script} ${_case})
  set_tests_properties(cli.${_case} PROPERTIES LABELS cli ENVIRONMENT "${SHARDQ_TEST_ENV}" TIMEOUT 600)
endforeach()
