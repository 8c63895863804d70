// Fault injection for the failure and resume tests: named points in the job where a test can
// make one rank die (SIGKILL), fail (throw) or stall (sleep 10 s, as on a filesystem that
// stops answering) on purpose, chosen by the environment:
//   SHARDQ_FAULT="<point>:<rank>:<index>:<kill|throw|stall>"   e.g. "layer_done:1:2:kill"
// <index> is the layer (or micro-batch) number at that point, -1 for any. Without the variable
// a fault point costs one getenv at first use. The points of the quantize job:
//   micro_batch      pipeline calibration, after micro-batch <index> passed this rank's layers
//   calibrate        sequential schedule, layer <index>'s statistics half accumulated
//   quantize         layer <index> in the middle of quantization (after its first linear)
//   layer_quantized  layer <index> quantized, nothing written yet
//   shard_write      layer <index>'s shard file half written (still NAME.tmp)
//   commit_recorded  layer <index>'s commit record written, its shard file still NAME.tmp
//   shard_closed     layer <index>'s shard file published, its journal entry not yet written
//   before_manifest  every shard committed; model.h5 and manifest.json not yet written
// And of the REST coordinator (rank 0, index -1):
//   launched         a job's launch (fork or sbatch) returned, the job's record not yet saved
//   check_plan       a submission's or resume's spec being checked against the model's files
#pragma once

#include <string_view>

namespace shardq {

void fault_point(std::string_view point, int rank, int index);

}  // namespace shardq
