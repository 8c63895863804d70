// The exact int128 reduction behind the NCCL backend: the limb encoding
// (kernels/cuda/int128_limbs.hpp) against host __int128 arithmetic, including sums of several
// "ranks" done as int64 limb sums, and a one-rank NcclComm (comm/nccl/nccl_comm.hpp).
#include <random>

#include "kernels/cuda/int128_limbs.hpp"
#include "tests/gpu/gpu_check.hpp"
#ifdef SHARDQ_HAVE_NCCL
#include "comm/nccl/nccl_comm.hpp"
#endif

namespace shardq {
namespace {

using cuda::hessian_int;
__extension__ typedef unsigned __int128 u128;

std::vector<hessian_int> random_int128(std::size_t n, uint32_t seed, int max_bits) {
  std::mt19937_64 rng(seed);
  std::vector<hessian_int> v(n);
  for (auto& x : v) {
    const u128 bits = (static_cast<u128>(rng()) << 64) | rng();
    x = static_cast<hessian_int>(bits) >> (128 - max_bits);  // signed, |x| < 2^(max_bits-1)
  }
  v[0] = 0;
  v[1] = -1;
  return v;
}

TEST(Int128Limbs, SumsOfRanksAreExact) {
  SHARDQ_REQUIRE_GPU();
  const std::size_t n = 1000;
  const int ranks = 5;
  std::vector<hessian_int> expected(n, 0);
  std::vector<int64_t> limb_sums(n * cuda::int128_limbs, 0);
  for (int r = 0; r < ranks; ++r) {
    const auto values = random_int128(n, 100 + r, 124);  // sums stay below 2^127
    for (std::size_t i = 0; i < n; ++i) expected[i] += values[i];
    cuda::DeviceBuffer<hessian_int> d_values = cuda::to_device(values);
    cuda::DeviceBuffer<int64_t> d_limbs(n * cuda::int128_limbs);
    cuda::int128_to_limbs(d_values.get(), n, d_limbs.get(), nullptr);
    const auto limbs = d_limbs.to_host();
    for (std::size_t i = 0; i < limbs.size(); ++i) limb_sums[i] += limbs[i];  // what ncclInt64 sums do
  }
  cuda::DeviceBuffer<int64_t> d_sums = cuda::to_device(limb_sums);
  cuda::DeviceBuffer<hessian_int> d_out(n);
  cuda::DeviceBuffer<unsigned> d_overflow(1);
  d_overflow.zero();
  cuda::limbs_to_int128(d_sums.get(), n, d_out.get(), d_overflow.get(), nullptr);
  const auto got = d_out.to_host();
  EXPECT_EQ(d_overflow.to_host()[0], 0u);
  std::size_t mismatches = 0;
  for (std::size_t i = 0; i < n; ++i) mismatches += got[i] != expected[i];
  EXPECT_EQ(mismatches, 0u);
}

TEST(Int128Limbs, OverflowIsFlagged) {
  SHARDQ_REQUIRE_GPU();
  const hessian_int big = static_cast<hessian_int>(static_cast<u128>(1) << 126);
  const std::vector<hessian_int> values = {big, big};
  cuda::DeviceBuffer<hessian_int> d_values = cuda::to_device(values);
  cuda::DeviceBuffer<int64_t> d_limbs(2 * cuda::int128_limbs);
  cuda::int128_to_limbs(d_values.get(), 2, d_limbs.get(), nullptr);
  auto limbs = d_limbs.to_host();
  // Sum the two values into slot 0 (2^127 does not fit in int128).
  for (int k = 0; k < cuda::int128_limbs; ++k) limbs[k * 2] += limbs[k * 2 + 1];
  cuda::DeviceBuffer<int64_t> d_sums = cuda::to_device(limbs);
  cuda::DeviceBuffer<hessian_int> d_out(2);
  cuda::DeviceBuffer<unsigned> d_overflow(1);
  d_overflow.zero();
  cuda::limbs_to_int128(d_sums.get(), 2, d_out.get(), d_overflow.get(), nullptr);
  EXPECT_EQ(d_overflow.to_host()[0], 1u);
}

#ifdef SHARDQ_HAVE_NCCL
TEST(NcclComm, OneRankAllreduceKeepsValues) {
  SHARDQ_REQUIRE_GPU();
  cuda::NcclComm comm(cuda::NcclComm::unique_id(), 1, 0);
  EXPECT_EQ(comm.size(), 1);
  const auto values = random_int128(333, 7, 127);
  cuda::DeviceBuffer<hessian_int> d_values = cuda::to_device(values);
  comm.allreduce_sum(d_values.get(), values.size());
  EXPECT_TRUE(d_values.to_host() == values);
  std::vector<int64_t> ints = {1, -2, 1LL << 62};
  cuda::DeviceBuffer<int64_t> d_ints = cuda::to_device(ints);
  comm.allreduce_sum(d_ints.get(), ints.size());
  EXPECT_EQ(d_ints.to_host(), ints);
}
#endif

}  // namespace
}  // namespace shardq
