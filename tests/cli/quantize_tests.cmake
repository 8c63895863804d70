foreach(part quality errors badspec output)
  add_test(NAME cli.quantize_${part} COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/quantize_job.sh ${part})
  set_tests_properties(cli.quantize_${part} PROPERTIES LABELS "cli" ENVIRONMENT "${SHARDQ_TEST_ENV}" TIMEOUT 900)
endforeach()
