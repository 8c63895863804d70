# Service tests (label service): a real `shardq serve` over loopback HTTP; the cases are in
# service_tests.sh. The slurm case starts a one-node SLURM (needs root and scripts/setup.sh).
foreach(_case submit_eval errors concurrent restart cancel slurm)
  add_test(NAME service.${_case} COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/service_tests.sh ${_case})
  set_tests_properties(service.${_case} PROPERTIES LABELS service ENVIRONMENT "${SHARDQ_TEST_ENV}"
                       TIMEOUT 300 PROCESSORS 2 RESOURCE_LOCK shardq_service)
endforeach()
