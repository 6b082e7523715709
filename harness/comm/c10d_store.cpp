#include "harness/comm/c10d_store.h"

#include <c10/util/Exception.h>

namespace moe::comm {
namespace {

class C10dStore : public c10d::Store {
 public:
  explicit C10dStore(std::shared_ptr<store::Store> s) : c10d::Store(s->timeout()), s_(std::move(s)) {}

  c10::intrusive_ptr<c10d::Store> clone() override { return c10::make_intrusive<C10dStore>(s_); }

  void set(const std::string& key, const std::vector<uint8_t>& value) override { s_->set(key, value); }

  std::vector<uint8_t> compareSet(const std::string& key, const std::vector<uint8_t>&,
                                  const std::vector<uint8_t>&) override {
    TORCH_CHECK(false, "moe-harness store: compareSet('", key, "') is not supported");
  }

  std::vector<uint8_t> get(const std::string& key) override { return s_->get(key); }

  int64_t add(const std::string& key, int64_t value) override { return s_->add(key, value); }

  bool deleteKey(const std::string& key) override {
    TORCH_CHECK(false, "moe-harness store: deleteKey('", key, "') is not supported");
  }

  // store::Store has no non-blocking lookup: a wait of 1 ms stands in.
  bool check(const std::vector<std::string>& keys) override {
    try {
      s_->wait(keys, std::chrono::milliseconds(1));
      return true;
    } catch (const std::exception&) {
      return false;
    }
  }

  int64_t getNumKeys() override { TORCH_CHECK(false, "moe-harness store: getNumKeys is not supported"); }

  void wait(const std::vector<std::string>& keys) override { s_->wait(keys, s_->timeout()); }

  void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& timeout) override {
    s_->wait(keys, timeout);
  }

 private:
  std::shared_ptr<store::Store> s_;
};

}  // namespace

c10::intrusive_ptr<c10d::Store> asC10dStore(std::shared_ptr<store::Store> store) {
  return c10::make_intrusive<C10dStore>(std::move(store));
}

}  // namespace moe::comm
