# GPU job tests (label gpu): the whole job with device cuda against the CPU job. They exit 77
# (skipped) where no GPU is visible; built only with the CUDA tier.
if(SHARDQ_HAVE_CUDA)
  foreach(model stories synth)
    add_test(NAME gpu.job_parity_${model} COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/job_parity.sh ${model})
    set_tests_properties(gpu.job_parity_${model} PROPERTIES LABELS "gpu" ENVIRONMENT "${SHARDQ_TEST_ENV}"
                         TIMEOUT 900 SKIP_RETURN_CODE 77)
  endforeach()
  add_test(NAME gpu.job_parity_stories_np2 COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/job_parity.sh stories)
  set_tests_properties(gpu.job_parity_stories_np2 PROPERTIES LABELS "gpu" ENVIRONMENT "${SHARDQ_TEST_ENV};RANKS=2"
                       TIMEOUT 900 SKIP_RETURN_CODE 77 PROCESSORS 2)
endif()
