# GPU job tests (label gpu): the whole job with device cuda against the CPU job. They exit 77
# (skipped) where no GPU is visible; built only with the CUDA tier.
if(SHARDQ_HAVE_CUDA)
  # stories: ≥ 99.9 % of all codes equal. synth: ≥ 99.9 % where the inputs are the CPU's bits
  # and the CPU's output errors everywhere (job_parity.sh says why not all codes).
  foreach(model stories synth)
    add_test(NAME gpu.job_parity_${model} COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/job_parity.sh ${model})
    set_tests_properties(gpu.job_parity_${model} PROPERTIES LABELS "gpu" ENVIRONMENT "${SHARDQ_TEST_ENV}"
                         TIMEOUT 900 SKIP_RETURN_CODE 77)
  endforeach()
  add_test(NAME gpu.job_parity_stories_np2 COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/job_parity.sh stories)
  set_tests_properties(gpu.job_parity_stories_np2 PROPERTIES LABELS "gpu" ENVIRONMENT "${SHARDQ_TEST_ENV};RANKS=2"
                       TIMEOUT 900 SKIP_RETURN_CODE 77 PROCESSORS 2)
  # comm auto with two ranks: NCCL where each rank has a GPU, MPI where they share one.
  add_test(NAME gpu.job_parity_stories_np2_comm_auto COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/job_parity.sh stories)
  set_tests_properties(gpu.job_parity_stories_np2_comm_auto PROPERTIES LABELS "gpu"
                       ENVIRONMENT "${SHARDQ_TEST_ENV};RANKS=2;COMM=auto" TIMEOUT 900 SKIP_RETURN_CODE 77 PROCESSORS 2)
  # comm nccl with more ranks than GPUs: one clear error line naming the field, on every rank.
  add_test(NAME gpu.nccl_refuses_shared_gpu COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/nccl_shared_gpu.sh)
  set_tests_properties(gpu.nccl_refuses_shared_gpu PROPERTIES LABELS "gpu" ENVIRONMENT "${SHARDQ_TEST_ENV}"
                       TIMEOUT 300 SKIP_RETURN_CODE 77 PROCESSORS 2)
endif()
