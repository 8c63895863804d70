// main of the test binaries: GoogleTest's, after choosing OpenBLAS's kernels for this CPU as
// the shardq executable does (kernels/cpu/blas.hpp), so the tests run the products users run.
#include <gtest/gtest.h>

#include "kernels/cpu/blas.hpp"

int main(int argc, char** argv) {
  shardq::cpu::blas_select_kernels(argv);
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
