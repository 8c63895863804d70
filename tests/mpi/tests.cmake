# MPI tests: the distributed job under mpirun (as root in CI: OMPI_ALLOW_RUN_AS_ROOT).
foreach(model stories synth)
  add_test(NAME mpi.determinism_${model} COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/determinism.sh ${model})
  set_tests_properties(mpi.determinism_${model} PROPERTIES LABELS "mpi" ENVIRONMENT "${SHARDQ_TEST_ENV}"
                       TIMEOUT 900 PROCESSORS 2)
endforeach()
add_test(NAME mpi.rank_failure COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/rank_failure.sh)
set_tests_properties(mpi.rank_failure PROPERTIES LABELS "mpi" ENVIRONMENT "${SHARDQ_TEST_ENV}" TIMEOUT 600 PROCESSORS 2)
# Kill at every fault point, resume, compare bit for bit (issue: resume and fault tolerance).
foreach(schedule sequential pipeline)
  foreach(np 1 3)
    add_test(NAME mpi.resume_${schedule}_np${np} COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/resume.sh ${schedule} ${np})
    set_tests_properties(mpi.resume_${schedule}_np${np} PROPERTIES LABELS "mpi" ENVIRONMENT "${SHARDQ_TEST_ENV}"
                         TIMEOUT 900 PROCESSORS 2)
  endforeach()
endforeach()
# One writer per output directory: a second job on a running job's output is refused.
add_test(NAME mpi.one_writer COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/one_writer.sh)
set_tests_properties(mpi.one_writer PROPERTIES LABELS "mpi" TIMEOUT 600 PROCESSORS 2
  ENVIRONMENT "${SHARDQ_TEST_ENV};SHARDQ_LOCKS_REFUSED_LIB=$<TARGET_FILE:shardq_fcntl_locks_refused>")
