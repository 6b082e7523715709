#pragma once
// A directory of single-device reference runs, so that every case run of the
// same (config, dtype, seed, steps, batch, sequence length, checkpoint)
// computes the reference once.
//
// Contract:
//  - key(): a hex digest of everything the reference depends on, including
//    the identity of the running binary (path, size, mtime), so a rebuilt
//    harness never reuses a reference computed by different code.
//  - load(): the cached run, or nullopt when absent or incomplete (an entry
//    is complete only once its directory was renamed into place).
//  - store(): writes into a private temporary directory and renames it to
//    the key, so concurrent jobs never see a half-written entry; when another
//    job stored the key first, its entry is kept and ours is discarded.
// Entry layout: <dir>/<key>/{steps.json, grads_step1.safetensors,
// final.safetensors}; steps.json also holds the inputs of the key in clear.
#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "reference/train/trainer.h"

namespace moe::ref {

struct ReferenceKey {
  nlohmann::json config;   // ModelConfig::toJson()
  std::string dtype;       // "fp32" | "bf16"
  TrainOptions train;      // steps, seed, batch, seq len, optimizer
  std::string checkpoint;  // path; "" = the seed's init
};

class ReferenceCache {
 public:
  explicit ReferenceCache(std::string dir) : dir_(std::move(dir)) {}

  static std::string key(const ReferenceKey& k);
  // steps, gradsStep1 and finalParams (initialParams is left empty).
  std::optional<TrainResult> load(const std::string& key) const;
  void store(const std::string& key, const ReferenceKey& inputs, const TrainResult& result) const;

  // Whether the entry is complete (stored and renamed into place).
  bool has(const std::string& key) const;
  // The entry's directory (whether or not it exists).
  std::string entryDir(const std::string& key) const;
  // Only the records of a complete entry (loss, ce, aux, grad norm): the
  // tensors stay on disk, read slice by slice through
  // <entryDir>/{grads_step1,final}.safetensors. HarnessError when absent.
  std::vector<StepRecord> loadSteps(const std::string& key) const;
  // Stores the output directory of `moe-harness reference` (runReference:
  // grads_step1.safetensors, model_final.safetensors, losses.json) as the
  // entry by renaming its files: no tensor is read or copied. `runDir` must
  // be on the cache's file system; it is consumed.
  void storeReferenceRun(const std::string& key, const ReferenceKey& inputs, const std::string& runDir) const;

  // An exclusive lock on `key` (flock of <dir>/<key>.lock) held until the
  // returned object is destroyed; blocks while another job holds it. Jobs
  // that run concurrently (`run --jobs`) and need the same reference take
  // it around load-or-compute-and-store, so one computes and the others
  // read its entry. The kernel releases it when a holder dies.
  class KeyLock {
   public:
    explicit KeyLock(int fd) : fd_(fd) {}
    KeyLock(const KeyLock&) = delete;
    KeyLock& operator=(const KeyLock&) = delete;
    ~KeyLock();

   private:
    int fd_;
  };
  std::unique_ptr<KeyLock> lock(const std::string& key) const;

 private:
  std::string dir_;
};

}  // namespace moe::ref
