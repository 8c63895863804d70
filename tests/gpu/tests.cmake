# GPU job tests (label gpu): the whole job with device cuda against the CPU job. They exit 77
# (skipped) where no GPU is visible; built only with the CUDA tier.
if(SHARDQ_HAVE_CUDA)
  foreach(model stories synth)
    add_test(NAME gpu.job_parity_${model} COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/job_parity.sh ${model})
    set_tests_properties(gpu.job_parity_${model} PROPERTIES LABELS "gpu" ENVIRONMENT "${SHARDQ_TEST_ENV}"
                         TIMEOUT 900 SKIP_RETURN_CODE 77)
  endforeach()
  if(SHARDQ_CUDA_EMULATED)
    # Not a check of the emulated kernels, and it fails there: with the emulator's device
    # numerics the synth job's codes agree 89.6 % with the CPU job's (layer 0's q/k/v 100 %,
    # o_proj 99.91 %, its MLP 99.69-99.90 %, then compounding through the sequential
    # schedule): ulp-level differences in the forward pass (products, attention) move the
    # Hessians of every linear after the first attention, and GPTQ's error feedback turns a
    # flipped code into more along its 512- or 1376-column row. What that predicts for a GPU:
    # bench/GPU_NOTES.md.
    set_tests_properties(gpu.job_parity_synth PROPERTIES DISABLED TRUE)
  endif()
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
