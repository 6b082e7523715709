#pragma once
// A c10d::Store view of the harness's store::Store, so libtorch's process
// groups (c10d::ProcessGroupGloo, c10d::ProcessGroupNCCL) rendezvous through
// the job's store like every other part of the harness. Only the backends
// include this header.
//
// Contract: set/get/add/wait/check go to the wrapped store (get and wait
// block up to the store's timeout, or the one given, then throw);
// compareSet, deleteKey and getNumKeys are not offered by store::Store and
// throw c10::Error naming the operation (the process groups do not use them).
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <memory>

#include "harness/store/store.h"

namespace moe::comm {

c10::intrusive_ptr<c10d::Store> asC10dStore(std::shared_ptr<store::Store> store);

}  // namespace moe::comm
