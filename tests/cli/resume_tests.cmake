add_test(NAME cli.resume_checks COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/resume_checks.sh)
set_tests_properties(cli.resume_checks PROPERTIES LABELS "cli" ENVIRONMENT "${SHARDQ_TEST_ENV};SHARDQ_DISK_FULL_LIB=$<TARGET_FILE:shardq_disk_full>" TIMEOUT 900)
