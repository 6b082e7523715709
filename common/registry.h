#pragma once
// The one plug-in idiom of the project: plan styles, checks, parameter
// stores (data-parallel wrappers), loading paths, report printers, mutants
// and CLI commands are all plug-ins of an interface registered in a
// Registry<Interface>.
//
// How to add a plug-in of any kind:
//   1. Write one file with a class deriving from the interface (every
//      interface has `std::string name() const` and a static
//      `kPluginKind`, e.g. "plan style", used in error messages).
//   2. End the file with one registration line:
//        MOE_REGISTER(PlanStyle, MyStyle);
//      Arguments after the class are passed to its constructor, so a
//      plug-in that is a function (a command, a mutant, a store factory) or
//      plain data (a module-only style) needs no class of its own:
//        MOE_REGISTER(Command, FunctionCommand, "run-plan", addRunPlanCommand);
//   3. Add the file to its folder's source list in CMakeLists.txt.
// Nothing else: the registry, the CLI listings, the case schema's name
// lists and the ctest registrations read the registry.
//
// Registration runs during static initialisation, so every plug-in library
// is linked as a whole archive (moe_library in the top CMakeLists.txt):
// otherwise the linker would drop the object files nothing references. A
// test binary may register its own plug-ins the same way, in its own file.
//
// Order: static initialisation order across files is unspecified, so
// all() and names() are sorted by name; a kind whose order matters sorts by
// its own key (checks: their stage).
#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "common/error.h"

namespace moe {

template <typename Interface>
class Registry {
 public:
  // The process-wide registry of this interface (constructed on first use,
  // so registrations from any translation unit see it).
  static Registry& instance() {
    static Registry* r = new Registry();  // never destroyed: no exit-order issues
    return *r;
  }

  // Takes ownership. A second plug-in with the same name is a bug of the
  // build (InternalError), not a user error.
  void add(std::unique_ptr<Interface> p) {
    MOE_ASSERT(p != nullptr, "null ", Interface::kPluginKind);
    MOE_ASSERT(find(p->name()) == nullptr, Interface::kPluginKind, " '", p->name(), "' is registered twice");
    auto at = std::lower_bound(items_.begin(), items_.end(), p->name(),
                               [](const std::unique_ptr<Interface>& a, const std::string& n) { return a->name() < n; });
    items_.insert(at, std::move(p));
  }
  template <typename T, typename... Args>
  T& emplace(Args&&... args) {
    auto p = std::make_unique<T>(std::forward<Args>(args)...);
    T& ref = *p;
    add(std::move(p));
    return ref;
  }

  // nullptr when unknown.
  const Interface* find(const std::string& name) const {
    for (const auto& p : items_)
      if (p->name() == name) return p.get();
    return nullptr;
  }
  bool has(const std::string& name) const { return find(name) != nullptr; }
  // Throws HarnessError "unknown <kind> 'x' (known: a, b, ...)".
  const Interface& get(const std::string& name) const {
    if (const Interface* p = find(name)) return *p;
    fail("unknown ", Interface::kPluginKind, " '", name, "' (known: ", joinedNames(), ")");
  }
  // Every plug-in, sorted by name.
  std::vector<const Interface*> all() const {
    std::vector<const Interface*> out;
    for (const auto& p : items_) out.push_back(p.get());
    return out;
  }
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& p : items_) out.push_back(p->name());
    return out;
  }
  std::string joinedNames() const {
    std::string s;
    for (const auto& p : items_) s += (s.empty() ? "" : ", ") + p->name();
    return s;
  }

 private:
  Registry() = default;
  std::vector<std::unique_ptr<Interface>> items_;
};

// The registration object MOE_REGISTER defines.
template <typename Interface, typename T>
struct Registrar {
  template <typename... Args>
  explicit Registrar(Args&&... args) {
    Registry<Interface>::instance().add(std::make_unique<T>(std::forward<Args>(args)...));
  }
};

}  // namespace moe

#define MOE_REGISTRY_CONCAT_(a, b) a##b
#define MOE_REGISTRY_CONCAT(a, b) MOE_REGISTRY_CONCAT_(a, b)
// One line per plug-in, at namespace scope in the plug-in's own file; any
// further arguments go to Class's constructor.
#define MOE_REGISTER(Interface, ...) MOE_REGISTER_IMPL_(Interface, __VA_ARGS__)
#define MOE_REGISTER_IMPL_(Interface, Class, ...) \
  static const ::moe::Registrar<Interface, Class> MOE_REGISTRY_CONCAT(moe_registrar_, __COUNTER__){__VA_ARGS__}
