// rawdax_powercut: both halves of a power-cut test (tests/guest/powercut.sh).
//
//   rawdax_powercut write REGION NAME SIZE SEED READY
//     Opens REGION (creating a directory region, or formatting a blank
//     devdax: device, and namespace NAME of SIZE bytes when missing), writes
//     SIZE bytes of the pattern of SEED through a mapping,
//     persists them with Mapping::persist(), prints READY and sleeps until
//     killed: nothing after READY may make the bytes durable.
//   rawdax_powercut check REGION NAME SIZE SEED
//     Reads the first SIZE bytes back through the block face. Exit 0 when
//     they are the pattern of SEED; 1, naming the first difference, if not.
//
//   rawdax_powercut carve-churn REGION SEED [--format] [--ops N]
//                               [--cut-after K --cut-text TEXT [--small-after-cut]]
//                               [--max-units U]
//   rawdax_powercut carve-check REGION
//     The carving power-cut loop (tests/guest/carve_powercut.sh), on a carved
//     region (devdax:/dev/daxX.Y in the guest; file:PATH works anywhere).
//     See "Carving" below for the protocol and what a check accepts.
//
// On DAX media persist() must be the cache-line flush, never msync: this
// program defines msync itself, so librawdax's calls land here and are
// counted (the dynamic linker prefers the executable's definition), and
// `write` fails if persist() made any.
#include <dlfcn.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "rawdax/rawdax.h"
#include "powercut_ops.h"
#include "powercut_pattern.h"

namespace {
std::atomic<int> g_msync_calls{0};
}  // namespace

extern "C" int msync(void* addr, size_t len, int flags) {
  g_msync_calls.fetch_add(1);
  return static_cast<int>(::syscall(SYS_msync, addr, len, flags));
}

namespace {

using rawdax_powercut::classify;
using rawdax_powercut::Fill;
using rawdax_powercut::kChunk;
using rawdax_powercut::kTrailer;
using rawdax_powercut::layout_errors;
using rawdax_powercut::pattern_word;
using rawdax_powercut::Verdict;

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
               "       rawdax_powercut check REGION NAME SIZE SEED\n"
               "       rawdax_powercut carve-churn REGION SEED [--format] [--ops N]\n"
               "                       [--cut-after K --cut-text TEXT [--small-after-cut]]\n"
               "                       [--max-units U]\n"
               "       rawdax_powercut carve-check REGION\n");
  return 2;
}


// --- Carving ---------------------------------------------------------------
//
// carve-churn creates and destroys namespaces until it has done --ops of
// them, or, with --cut-text, forever: it prints TEXT after K operations and
// goes on, so the runner's SIGKILL lands at an arbitrary point of whatever
// operation runs then. Each namespace is filled with the pattern of its key
// (a hash of its name and uuid), in this order:
//   1. create_namespace: rawdax zeroes the extent, persists it, and only then
//      commits the label that names it;
//   2. the body (all but the last 64 bytes) in 2 MiB chunks, ascending, each
//      chunk persisted before the next is stored;
//   3. the trailer (the last 64 bytes), persisted.
// Only namespaces whose trailer is in place are destroyed. So, after a cut,
// carve-check accepts exactly:
//   - the region opens without create, with the old or the new labels;
//   - extents aligned, inside [label area, device size), pairwise disjoint;
//     names and uuids unique; space().free == data bytes - sum of sizes;
//   - each namespace either complete (every byte its pattern) or in progress:
//     chunks [0, c) its pattern, chunk c each 8-byte word its pattern or zero,
//     everything after it zero; the chunks are the body's 2 MiB pieces and
//     then the trailer. At most one namespace
//     is in progress (the one the cut interrupted; a create cut after its
//     label commit is one too: all zeros).
// A create cut before its label commit leaves no namespace (its extent is
// free space again); a destroy is either not done or done. A new namespace
// must read as zeros whatever an earlier one left in its extent.
// carve-churn first destroys the namespace in progress (the last cut's), so
// each cut starts from complete namespaces only.

uint64_t key_of(const rawdax::NamespaceInfo& ns, uint64_t salt = 0) {
  uint64_t h = 0xcbf29ce484222325ULL ^ salt;  // FNV-1a over "name/uuid"
  for (char c : ns.name + "/" + ns.uuid) h = (h ^ static_cast<uint8_t>(c)) * 0x100000001b3ULL;
  return h;
}

struct CarveRun {
  std::string spec;
  std::unique_ptr<rawdax::Region> region;
  int fail(const std::string& what) {
    std::printf("CARVE FAILED: %s\n", what.c_str());
    std::fflush(stdout);
    return 1;
  }
};

int open_carved(CarveRun& run, bool format) {
  auto region = rawdax::Region::open(run.spec, {.create = format});
  if (!region) return run.fail("open " + run.spec + ": " + region.error().message());
  run.region = std::move(*region);
  if (!run.region->space().carved) return run.fail(run.spec + " is not a carved region");
  if (!run.region->space().recovered_from.empty()) {
    std::printf("opened from the previous label index: %s\n",
                run.region->space().recovered_from.c_str());
  }
  return 0;
}

// Reads namespace `ns` and classifies it; nullopt (with `error` set) when it
// cannot be read.
std::optional<Verdict> inspect(CarveRun& run, const rawdax::NamespaceInfo& ns, uint64_t salt,
                               std::string* error) {
  auto dev = run.region->open_device(ns.name);
  if (!dev) {
    *error = "open " + ns.name + ": " + dev.error().message();
    return std::nullopt;
  }
  auto m = (*dev)->map(0, ns.size, rawdax::Access::ReadOnly);
  if (!m) {
    *error = "map " + ns.name + ": " + m.error().message();
    return std::nullopt;
  }
  return classify(m->data(), ns.size, key_of(ns, salt));
}

int carve_check(CarveRun& run) {
  if (int rc = open_carved(run, false)) return rc;
  const auto list = run.region->list();
  const auto space = run.region->space();
  for (const std::string& e : layout_errors(list, space)) return run.fail(e);
  // The layout check must be able to fail: a copy with one extent moved onto
  // its neighbour, or past the end, is refused.
  auto broken = list;
  if (broken.size() >= 2) {
    std::sort(broken.begin(), broken.end(), [](auto& a, auto& b) { return a.offset < b.offset; });
    broken[1].offset = broken[0].offset + space.align * (broken[0].size > space.align ? 1 : 0);
  } else {
    rawdax::NamespaceInfo bogus;
    bogus.name = bogus.uuid = "bogus";
    bogus.size = space.align;
    bogus.offset = space.device_size;
    broken.push_back(bogus);
  }
  if (layout_errors(broken, space).empty()) return run.fail("the layout check accepts a broken layout");

  int complete = 0, negative = 0;
  std::vector<std::string> in_progress;
  for (const auto& ns : list) {
    std::string error;
    auto v = inspect(run, ns, 0, &error);
    if (!v) return run.fail(error);
    if (v->fill == Fill::kIllegal) return run.fail("namespace " + ns.name + ": " + v->why);
    if (v->fill == Fill::kInProgress) {
      in_progress.push_back(ns.name);
      continue;
    }
    ++complete;
    // The pattern check must be able to fail: under another key the same
    // bytes are illegal.
    auto wrong = inspect(run, ns, 1, &error);
    if (!wrong) return run.fail(error);
    if (wrong->fill != Fill::kIllegal) {
      return run.fail("namespace " + ns.name + " also passes as the pattern of another key");
    }
    ++negative;
  }
  if (in_progress.size() > 1) {
    std::string names;
    for (const auto& n : in_progress) names += " " + n;
    return run.fail("more than one namespace in progress:" + names);
  }
  std::printf("CARVE CHECK OK: %zu namespaces (%d complete, %zu in progress%s%s), %" PRIu64
              " of %" PRIu64 " data bytes free, largest free %" PRIu64
              ", label generation %" PRIu64 "; wrong keys refused %d/%d\n",
              list.size(), complete, in_progress.size(), in_progress.empty() ? "" : ": ",
              in_progress.empty() ? "" : in_progress.front().c_str(), space.free,
              space.device_size - space.label_area_size, space.largest_free,
              run.region->generation(), negative, complete);
  std::fflush(stdout);
  return 0;
}

// Creates a namespace, checks it reads as zeros, and fills it (see above).
int carve_create(CarveRun& run, const std::string& name, uint64_t size) {
  auto info = run.region->create_namespace({.name = name, .size = size});
  if (!info) return run.fail("create " + name + ": " + info.error().message());
  std::printf("  created %s at offset %" PRIu64 "\n", name.c_str(), info->offset);
  std::fflush(stdout);
  auto dev = run.region->open_device(name);
  if (!dev) return run.fail("open " + name + ": " + dev.error().message());
  auto m = (*dev)->map(0, info->size, rawdax::Access::ReadWrite);
  if (!m) return run.fail("map " + name + ": " + m.error().message());
  for (uint64_t i = 0; i < info->size; i += 8) {
    uint64_t w;
    std::memcpy(&w, m->data() + i, 8);
    if (w != 0) {
      char buf[160];
      std::snprintf(buf, sizeof buf, " reads 0x%016" PRIx64 " at %" PRIu64 ", not zero", w, i);
      return run.fail("new namespace " + name + " at offset " + std::to_string(info->offset) +
                      buf + " (an earlier namespace's bytes?)");
    }
  }
  const uint64_t key = key_of(*info), body = info->size - kTrailer;
  auto store = [&](uint64_t from, uint64_t to) {
    for (uint64_t i = from; i < to; i += 8) {
      uint64_t w = pattern_word(key, i / 8);
      std::memcpy(m->data() + i, &w, 8);
    }
    return m->persist(m->data() + from, to - from);
  };
  for (uint64_t at = 0; at < body; at += kChunk) {
    auto persisted = store(at, std::min(body, at + kChunk));
    if (!persisted) return run.fail("persist " + name + ": " + persisted.error().message());
  }
  auto persisted = store(body, info->size);
  if (!persisted) return run.fail("persist " + name + ": " + persisted.error().message());
  return 0;
}

struct ChurnOptions {
  uint64_t seed = 0;
  bool format = false;
  uint64_t ops = 0;           // without a cut text: stop after this many
  uint64_t cut_after = 0;
  std::string cut_text;       // printed after cut_after operations; then on forever
  uint64_t max_units = 24;    // largest namespace, in units of the align
  // After the cut text, only one-unit namespaces: short operations, so the
  // cut lands more often in a destroy or between operations than in a fill.
  bool small_after_cut = false;
};

int carve_churn(CarveRun& run, const ChurnOptions& opt) {
  if (int rc = open_carved(run, opt.format)) return rc;
  const uint64_t align = run.region->space().align;
  // The namespace the last cut left in progress goes first (see above).
  for (const auto& ns : run.region->list()) {
    std::string error;
    auto v = inspect(run, ns, 0, &error);
    if (!v) return run.fail(error);
    if (v->fill == Fill::kComplete) continue;
    if (auto gone = run.region->destroy_namespace(ns.name); !gone) {
      return run.fail("destroy " + ns.name + ": " + gone.error().message());
    }
    std::printf("destroyed %s, left in progress by the last cut\n", ns.name.c_str());
  }
  std::mt19937_64 rng(opt.seed);
  uint64_t creates = 0, destroys = 0, refusals = 0;
  for (uint64_t op = 0; opt.cut_text.empty() ? op < opt.ops : true; ++op) {
    if (!opt.cut_text.empty() && op == opt.cut_after) {
      std::printf("%s\n", opt.cut_text.c_str());
      std::fflush(stdout);
    }
    const auto list = run.region->list();
    const auto space = run.region->space();
    // Ops 0 and 1 are a create and a destroy, so every boot does both.
    const uint64_t dice = rng() % 100;
    const bool room = space.largest_free >= align;
    bool create = op == 0 ? room : op == 1 ? list.empty() : (list.size() < 2 || dice < 55);
    if (list.size() >= 10 || !room) create = false;
    if (list.empty() && !room) return run.fail("no namespace and no room for one");
    if (create && dice % 10 == 0) {
      // Larger than any free extent: refused, and nothing changes.
      const uint64_t gen = run.region->generation();
      auto too_big = run.region->create_namespace({.name = "toobig", .size = space.largest_free + align});
      if (too_big || too_big.error().code() != std::errc::no_space_on_device ||
          run.region->generation() != gen || run.region->list().size() != list.size()) {
        return run.fail("a create larger than the largest free extent (" +
                        std::to_string(space.largest_free) + ") was not refused cleanly");
      }
      ++refusals;
    }
    if (create) {
      const uint64_t units_free = space.largest_free / align;
      uint64_t units = rng() % 2 == 0 ? 1 + rng() % 2 : 1 + rng() % opt.max_units;
      if (opt.small_after_cut && !opt.cut_text.empty() && op >= opt.cut_after) units = 1;
      units = std::min(units, units_free);
      const std::string name = "c" + std::to_string(opt.seed) + "-" + std::to_string(op);
      std::printf("op %" PRIu64 ": create %s, %" PRIu64 " bytes\n", op, name.c_str(),
                  units * align);
      std::fflush(stdout);
      if (int rc = carve_create(run, name, units * align)) return rc;
      ++creates;
    } else {
      const auto& victim = list[rng() % list.size()];
      std::printf("op %" PRIu64 ": destroy %s (%" PRIu64 " bytes at offset %" PRIu64 ")\n", op,
                  victim.name.c_str(), victim.size, victim.offset);
      std::fflush(stdout);
      if (auto gone = run.region->destroy_namespace(victim.name); !gone) {
        return run.fail("destroy " + victim.name + ": " + gone.error().message());
      }
      ++destroys;
    }
    for (const std::string& e : layout_errors(run.region->list(), run.region->space())) {
      return run.fail("after op " + std::to_string(op) + ": " + e);
    }
  }
  std::printf("CARVE CHURN OK: %" PRIu64 " creates, %" PRIu64 " destroys, %" PRIu64
              " oversized creates refused\n",
              creates, destroys, refusals);
  std::fflush(stdout);
  return 0;
}

int carve_main(int argc, char** argv) {
  const std::string mode = argv[1];
  CarveRun run;
  run.spec = argv[2];
  if (mode == "carve-check") return argc == 3 ? carve_check(run) : usage();
  if (argc < 4) return usage();
  ChurnOptions opt;
  opt.seed = std::strtoull(argv[3], nullptr, 0);
  for (int i = 4; i < argc; ++i) {
    const std::string_view a = argv[i];
    const bool has_value = i + 1 < argc;
    if (a == "--format") {
      opt.format = true;
    } else if (a == "--ops" && has_value) {
      opt.ops = std::strtoull(argv[++i], nullptr, 0);
    } else if (a == "--cut-after" && has_value) {
      opt.cut_after = std::strtoull(argv[++i], nullptr, 0);
    } else if (a == "--cut-text" && has_value) {
      opt.cut_text = argv[++i];
    } else if (a == "--small-after-cut") {
      opt.small_after_cut = true;
    } else if (a == "--max-units" && has_value) {
      opt.max_units = std::max<uint64_t>(1, std::strtoull(argv[++i], nullptr, 0));
    } else {
      return usage();
    }
  }
  if (opt.cut_text.empty() && opt.ops == 0) return usage();
  return carve_churn(run, opt);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 3 && std::string_view(argv[1]).starts_with("carve-")) return carve_main(argc, argv);
  if (argc >= 2 && std::string_view(argv[1]).starts_with("ops-")) {
    return rawdax_powercut::ops_main(argc, argv);
  }
  if (argc < 6) return usage();
  const std::string mode = argv[1], spec = argv[2];
  std::string name = argv[3];
  const uint64_t size = std::strtoull(argv[4], nullptr, 0);
  const uint64_t seed = std::strtoull(argv[5], nullptr, 0);
  const bool writing = mode == "write";
  if ((writing && argc != 7) || (!writing && (mode != "check" || argc != 6)) || size == 0) {
    return usage();
  }
  auto region = rawdax::Region::open(spec, {.create = writing, .require_dax = true});
  if (!region) return fail("open " + spec, region.error());
  if (writing && !(*region)->find(name)) {
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
