# Independent readers of the HDF5 checkpoint: h5py/numpy (/usr/bin/python3) and h5ls.
# The fixture checkpoint comes from the unit test CheckpointFixture.WriteForPythonReader.
set(SHARDQ_PYTHON /usr/bin/python3)
foreach(mode reader h5ls)
  add_test(NAME python.checkpoint_${mode}
           COMMAND ${SHARDQ_PYTHON} ${CMAKE_CURRENT_LIST_DIR}/check_checkpoint.py ${mode} $<TARGET_FILE:shardq_unit_tests>)
  set_tests_properties(python.checkpoint_${mode} PROPERTIES LABELS python ENVIRONMENT "${SHARDQ_TEST_ENV}")
endforeach()
