// Loads ISA-L at run time (see isal.h): once per process, on first use.
#include "isal.h"

#include <dlfcn.h>
#include <limits.h>
#include <stdlib.h>

#include <cstdio>
#include <cstring>
#include <string>

namespace mfd {
namespace {

struct Loaded {
  const IsalApi* api = nullptr;
  std::string why;  // why api is nullptr
  std::string version;
  std::string file;
};

#ifdef MFD_HAVE_ISAL
IsalApi g_api;

// The release of the file the soname resolves to: ISA-L's libtool version is
// 2.0.MINOR (libisal.so.2.0.30 is ISA-L 2.30.0). Otherwise the headers' version.
std::string VersionOf(const std::string& file) {
  const char* base = std::strrchr(file.c_str(), '/');
  unsigned minor = 0;
  char tail = 0;
  if (base != nullptr && std::sscanf(base, "/libisal.so.2.0.%u%c", &minor, &tail) == 1)
    return "2." + std::to_string(minor) + ".0";
  return std::to_string(ISAL_MAJOR_VERSION) + "." + std::to_string(ISAL_MINOR_VERSION) + "." +
         std::to_string(ISAL_PATCH_VERSION);
}

template <typename F>
bool Resolve(void* lib, const char* name, F* fn, Loaded* out) {
  *fn = reinterpret_cast<F>(dlsym(lib, name));
  if (*fn == nullptr) out->why = out->file + " has no " + name;
  return *fn != nullptr;
}

Loaded Load() {
  Loaded out;
  const char* env = getenv("MFD_ISAL_LIBRARY");
  const std::string name = env != nullptr && env[0] != '\0' ? env : "libisal.so.2";
  if (name == "off") {
    out.why = "ISA-L is turned off (MFD_ISAL_LIBRARY=off)";
    return out;
  }
  void* lib = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    const char* err = dlerror();
    out.why = "ISA-L could not be loaded (" + (err != nullptr ? std::string(err) : name) +
              "); Debian: apt-get install libisal2";
    return out;
  }
  out.file = name;
  IsalApi api{};
  bool ok = Resolve(lib, "isal_deflate_init", &api.isal_deflate_init, &out) &&
            Resolve(lib, "isal_deflate", &api.isal_deflate, &out) &&
            Resolve(lib, "isal_deflate_stateless_init", &api.isal_deflate_stateless_init, &out) &&
            Resolve(lib, "isal_deflate_stateless", &api.isal_deflate_stateless, &out) &&
            Resolve(lib, "isal_inflate_init", &api.isal_inflate_init, &out) &&
            Resolve(lib, "isal_inflate", &api.isal_inflate, &out) &&
            Resolve(lib, "crc32_gzip_refl", &api.crc32_gzip_refl, &out) &&
            Resolve(lib, "crc32_iscsi", &api.crc32_iscsi, &out);
  if (!ok) {
    dlclose(lib);
    out.file.clear();
    return out;
  }
  // The file behind the name (the soname is a symlink to the versioned file).
  Dl_info info;
  char real[PATH_MAX];
  if (dladdr(reinterpret_cast<void*>(api.crc32_iscsi), &info) != 0 && info.dli_fname != nullptr)
    out.file = realpath(info.dli_fname, real) != nullptr ? real : info.dli_fname;
  out.version = VersionOf(out.file);
  g_api = api;
  out.api = &g_api;
  return out;  // the library stays loaded for the life of the process
}
#else
Loaded Load() {
  Loaded out;
  out.why =
      "this build has no ISA-L (libisal-dev's headers were not found when the addon was built)";
  return out;
}
#endif

const Loaded& Get() {
  static const Loaded loaded = Load();
  return loaded;
}

}  // namespace

const IsalApi* Isal() { return Get().api; }
const char* IsalUnavailable() { return Get().why.c_str(); }
const char* IsalVersion() { return Get().version.c_str(); }
const char* IsalFile() { return Get().file.c_str(); }

}  // namespace mfd
