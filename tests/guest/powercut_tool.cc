// rawdax_powercut: both halves of a power-cut test (tests/guest/powercut.sh).
//
//   rawdax_powercut write REGION NAME SIZE SEED READY
//     Opens REGION (creating a directory region and namespace NAME of SIZE
//     bytes when missing; a devdax: region has its one namespace and NAME is
//     ignored), writes SIZE bytes of the pattern of SEED through a mapping,
//     persists them with Mapping::persist(), prints READY and sleeps until
//     killed: nothing after READY may make the bytes durable.
//   rawdax_powercut check REGION NAME SIZE SEED
//     Reads the first SIZE bytes back through the block face. Exit 0 when
//     they are the pattern of SEED; 1, naming the first difference, if not.
//
// On DAX media persist() must be the cache-line flush, never msync: this
// program defines msync itself, so librawdax's calls land here and are
// counted (the dynamic linker prefers the executable's definition), and
// `write` fails if persist() made any.
#include <dlfcn.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>

#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "rawdax/rawdax.h"

namespace {
std::atomic<int> g_msync_calls{0};
}  // namespace

extern "C" int msync(void* addr, size_t len, int flags) {
  g_msync_calls.fetch_add(1);
  return static_cast<int>(::syscall(SYS_msync, addr, len, flags));
}

namespace {

// splitmix64: the same bytes from the same seed on every machine.
void fill(std::byte* out, uint64_t size, uint64_t seed) {
  uint64_t x = seed;
  for (uint64_t i = 0; i < size; i += 8) {
    uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    std::memcpy(out + i, &z, std::min<uint64_t>(8, size - i));
  }
}

int fail(const std::string& what, const rawdax::Error& error) {
  std::fprintf(stderr, "rawdax_powercut: %s: %s\n", what.c_str(), error.message().c_str());
  return 2;
}

int usage() {
  std::fprintf(stderr,
               "usage: rawdax_powercut write REGION NAME SIZE SEED READY\n"
               "       rawdax_powercut check REGION NAME SIZE SEED\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 6) return usage();
  const std::string mode = argv[1], spec = argv[2];
  std::string name = argv[3];
  const uint64_t size = std::strtoull(argv[4], nullptr, 0);
  const uint64_t seed = std::strtoull(argv[5], nullptr, 0);
  const bool writing = mode == "write";
  if ((writing && argc != 7) || (!writing && (mode != "check" || argc != 6)) || size == 0) {
    return usage();
  }
  const bool devdax = spec.rfind("devdax:", 0) == 0;

  auto region = rawdax::Region::open(spec, {.create = writing, .require_dax = true});
  if (!region) return fail("open " + spec, region.error());
  if (devdax) name = (*region)->list().front().name;
  if (writing && !devdax && !(*region)->find(name)) {
    auto made = (*region)->create_namespace({.name = name, .size = size});
    if (!made) return fail("create-namespace", made.error());
  }
  auto dev = (*region)->open_device(name);
  if (!dev) return fail("open namespace " + name, dev.error());
  std::vector<std::byte> expected(size);
  fill(expected.data(), size, seed);

  if (writing) {
    auto m = (*dev)->map(0, size, rawdax::Access::ReadWrite);
    if (!m) return fail("map", m.error());
    std::memcpy(m->data(), expected.data(), size);
    const int msyncs_before = g_msync_calls.load();
    auto persisted = m->persist(m->data(), size);
    if (!persisted) return fail("persist", persisted.error());
    const int msyncs = g_msync_calls.load() - msyncs_before;
    if (msyncs != 0) {
      std::fprintf(stderr, "rawdax_powercut: persist() on DAX media called msync %d times\n",
                   msyncs);
      return 1;
    }
    // The count is only worth something if librawdax's msync binds to ours:
    // the global lookup its calls go through must find this definition.
    if (::dlsym(RTLD_DEFAULT, "msync") != reinterpret_cast<void*>(&msync)) {
      std::fprintf(stderr, "rawdax_powercut: msync calls are not counted (not interposed)\n");
      return 2;
    }
    std::printf("wrote %" PRIu64 " bytes (seed %" PRIu64 ") to %s/%s, persist %s, msync calls 0\n%s\n",
                size, seed, spec.c_str(), name.c_str(),
                std::string(rawdax::to_string((*region)->capabilities().persist)).c_str(),
                argv[6]);
    std::fflush(stdout);
    for (;;) ::pause();  // until the power cut
  }

  std::vector<std::byte> actual(size);
  auto read = (*dev)->read(0, actual);
  if (!read) return fail("read", read.error());
  for (uint64_t i = 0; i < size; ++i) {
    if (actual[i] != expected[i]) {
      std::printf("MISMATCH in %s/%s at offset %" PRIu64 ": 0x%02x, the pattern of seed %" PRIu64
                  " has 0x%02x\n",
                  spec.c_str(), name.c_str(), i, static_cast<unsigned>(actual[i]), seed,
                  static_cast<unsigned>(expected[i]));
      return 1;
    }
  }
  std::printf("MATCH: %" PRIu64 " bytes of seed %" PRIu64 " in %s/%s\n", size, seed, spec.c_str(),
              name.c_str());
  return 0;
}
