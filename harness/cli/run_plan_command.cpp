// `moe-harness run-plan`: the command line of one conformance run
// (harness/conformance/run_plan.h).
#include <CLI/CLI.hpp>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include "common/error.h"
#include "harness/cli/commands.h"
#include "harness/conformance/run_plan.h"
#include "harness/mutate/mutant_registry.h"

namespace moe::cli {

void addRunPlanCommand(CLI::App& app) {
  auto o = std::make_shared<conformance::RunPlanOptions>();
  auto* sub = app.add_subcommand("run-plan", "Apply a plan on a mesh, train, and check placement, experts and parity (inside a launched job)");
  sub->add_option("--config", o->configPath, "model config JSON (HF field names)")->required()->check(CLI::ExistingFile);
  sub->add_option("--mesh", o->mesh, "mesh JSON, e.g. {\"ep\":2}")->required();
  sub->add_option("--plan", o->planPath, "plan JSON file (cases/plans/*.json)")->required()->check(CLI::ExistingFile);
  sub->add_option("--dtype", o->dtype, "precision policy")->check(CLI::IsMember({"fp32", "bf16"}))->capture_default_str();
  sub->add_option("--steps", o->steps, "training steps")->required();
  sub->add_option("--seed", o->seed, "seed of init and data")->capture_default_str();
  sub->add_option("--batch-size", o->batchSize, "global batch rows")->capture_default_str();
  sub->add_option("--seq-len", o->seqLen, "sequence length")->capture_default_str();
  sub->add_option("--checkpoint", o->checkpoint, "checkpoint to start from: a dir with model.safetensors or a sharded "
                  "model.safetensors.index.json, the file, or the index (fused or hub layout); default: init of --seed");
  sub->add_flag("--allow-nonfinite-checkpoint", o->allowNonFiniteCheckpoint,
                "load a checkpoint holding NaN or Inf (refused by default: a user error naming the tensor); the "
                "finite check then fails the run");
  sub->add_option("--dump-shards", o->dumpShards, "write each rank's local tensors to DIR/rank{r}.safetensors");
  sub->add_option("--load", o->load, "loading path: shard_on_read|rank0_broadcast|init_then_load")->capture_default_str();
  sub->add_option("--comm-timeout", o->commTimeout, "seconds a collective may block")->capture_default_str();
  sub->add_option("--backend", o->backend, "communication backend")->check(CLI::IsMember({"gloo", "nccl"}))->capture_default_str();
  sub->add_option("--device", o->device,
                  "device of the distributed run (parameters, batches, collectives): cpu|cuda; default: the backend's "
                  "(gloo: cpu, nccl: cuda); a rank's GPU comes from LOCAL_RANK")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  sub->add_option("--result-json", o->resultJson, "also write rank 0's JSON document to FILE");
  sub->add_option("--tolerance", o->tolerance,
                  "parity tolerance JSON: {\"loss_abs\":x,\"rtol\":r,\"atol\":a} or {\"loss_abs\":x,\"rel_norm\":n}; default: the dtype's");
  sub->add_option("--reference-cache", o->referenceCache, "directory where single-device references are cached and reused");
  sub->add_option("--wrapper", o->wrapper, "data-parallel wrapper (a ParamStore: none, fsdp, ...)")->capture_default_str();
  sub->add_option("--fsdp-experts", o->fsdpExperts, "fsdp: shard ep-sharded experts over their expert-data-parallel dims (edp) or leave them (none)")
      ->check(CLI::IsMember({"edp", "none"}))->capture_default_str();
  sub->add_option("--expect-memory-factor", o->expectMemoryFactor,
                  "assert (wrapper bytes / replicated bytes over the world) equals this factor; 0 = report only")
      ->capture_default_str();
  sub->add_flag("--allow-unaccounted-memory", o->allowUnaccountedMemory,
                "measured_memory: only report (not fail) when a rank holds more than the wrapper declares plus the "
                "allowance");
  auto expect = std::make_shared<std::string>();
  sub->add_option("--expect-placements", *expect,
                  "JSON array of expected placements [{\"param\":p,\"ranks\":[..],\"placements\":\"[Shard(0)]\","
                  "\"local_shape\":[..]}] judged by the expected_placements check");
  sub->add_option("--save", o->saveDir, "write a distributed checkpoint (per-rank pieces, metadata.json, COMPLETE) "
                  "of parameters, AdamW state and data position to DIR after step --save-at");
  sub->add_option("--save-at", o->saveAt, "the step after which --save writes (1..--steps)");
  sub->add_option("--save-format", o->saveFormat,
                  "--save's layout: sharded (per-rank pieces + metadata.json + COMPLETE) or hf (consolidated "
                  "Hugging Face layout: config.json, model safetensors with per-expert hub keys, "
                  "optimizer.safetensors, trainer_state.json; loadable by reference and from_pretrained)")
      ->check(CLI::IsMember({"sharded", "hf"}));
  sub->add_option("--resume", o->resumeDir, "resume from a checkpoint DIR (either layout) saved at step k by any mesh, "
                  "plan and wrapper; trains steps k+1..--steps against the uninterrupted reference");
  sub->add_flag("--resume-roundtrip", o->resumeRoundtrip, "after --save, resume from the checkpoint in the same job "
                "(a fresh trainer loads it) and train on; resume_parity judges the loaded state");
  sub->add_option("--mutant", o->mutant, "plant a known bug (issue 7; `moe-harness mutate --list`); default: none");
  sub->callback([o, expect] {
    // First: an unknown mutant fails before any rank connects. The run
    // itself only records the name (the conformance layer knows no mutants).
    if (!o->mutant.empty()) mutants::activateMutant(o->mutant);
    if (!expect->empty()) {
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(*expect);
      } catch (const nlohmann::json::exception& e) {
        fail("--expect-placements: not JSON: ", e.what());
      }
      o->expectedPlacements = checks::placementExpectationsFromJson(j);
    }
    // "{tmp}" and "{job}" in --save: the temporary directory and a token of
    // this job (its store port and launcher), so concurrent jobs of the same
    // arguments (the mutation suite's baseline and mutant) never share a
    // checkpoint; such a directory is removed after the run.
    for (const auto& [key, value] :
         {std::pair<std::string, std::string>{"{tmp}", std::filesystem::temp_directory_path().string()},
          {"{job}", std::string(std::getenv("MASTER_PORT") ? std::getenv("MASTER_PORT") : "0") + "-" +
                        std::to_string(::getppid())}})
      for (auto pos = o->saveDir.find(key); pos != std::string::npos; pos = o->saveDir.find(key)) {
        o->saveDir.replace(pos, key.size(), value);
        o->removeSaveAfter = true;
      }
    if (int code = conformance::runPlan(*o)) throw CommandExit{code};
  });
}

}  // namespace moe::cli

namespace moe::cli {
MOE_REGISTER(Command, FunctionCommand, "run-plan", moe::cli::addRunPlanCommand);
}  // namespace moe::cli
