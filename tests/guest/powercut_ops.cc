// Power cuts amid every region operation at once (tests/guest/ops_powercut.sh).
//
//   rawdax_powercut ops-run REGION SNAPDIR SEED BOOT [--label L] [--kinds KINDS]
//                   [--format] [--steps N | --cut KIND:STEP:TEXT | --cut-after-ms MS:TEXT |
//                    --until-cut] [--barrier DIR:N]
//   rawdax_powercut ops-check REGION SNAPDIR SEED BOOT [--label L] [--kinds KINDS]
//                   [--acked K=N[!],...]
//
// ops-run opens REGION (a directory region, or a carved devdax:/file: one;
// --format makes it and its fixed namespaces), prepares each kind (below),
// then runs one thread per kind, each doing steps 1, 2, ... of its operation.
// A thread prints "L: K begin OP N" before each operation it times and
// "L: K ack N" once step N is durable (every call it made returned). Snapshot
// files go to SNAPDIR (on a filesystem, for a devdax region too). The run
// ends after --steps N steps of each kind, or never: --cut prints TEXT once
// kind KIND acknowledged STEP and stalls that thread (the runner SIGKILLs the
// guest on TEXT, so that step is the last one of its kind); --cut-after-ms
// prints TEXT after MS milliseconds of steps, wherever every thread then is;
// --until-cut runs on for a cut that another process's text brings.
// --barrier DIR:N: once prepared, create DIR/L and start no step before DIR
// holds N entries (N processes on several regions start together).
//
// ops-check, in the next boot, opens the region and checks what the cut
// boot (BOOT, same SEED) left, given for each kind the last step the runner
// saw acknowledged (a '!' marks the stalled kind: nothing after it ran).
// Acknowledged means durable, so each kind's state must be that of its
// acknowledged step or of a later one, byte for byte; where an operation was
// in flight, the old or the new state of it. Then it checks again under
// another seed, which must fail for every kind, and with the stalled kind's
// next step claimed acknowledged, which must fail: so the checks can fail.
//
// Each step ends with its operation (the create, the resize, the snapshot,
// the restore): on ext4 any fsync commits the whole journal, so a data write
// after it would make a lost fsync of the operation durable anyway.
//
// The kinds, each on its own namespaces (U: the region's align, at least
// 1 MiB; gen(K, n): the pattern of kind K, step n, of this boot):
//   c  create and destroy. Step n destroys c.B.(n-2), fills c.B.(n-1) (2 MiB
//      chunks, then a 64-byte trailer, each written with FUA) and creates
//      c.B.n of 2-4 U. Legal: the c.B.* namespaces are {}, {M} anywhere in
//      its fill, or {M-1} filled and {M} all zeros; sizes as drawn;
//      M >= acked.
//   r  resize. Step n writes gen(r, n) over r (FUA), then resizes it to U
//      (odd n) or 2U (even). Legal: the state after a step g >= acked (its
//      pattern below the size both steps had, zeros in what it grew), or
//      that state with words of gen(r, g+1) (step g+1 writing).
//   s  snapshot. Step n writes gen(s, n) over s (FUA) and snapshots it to
//      SNAPDIR/s.B.n.snap; then removes s.B.(n-2).snap. Legal: every named
//      file verifies and restores to its gen; the newest is >= acked; a
//      temporary file of an unfinished snapshot either fails verify or is
//      complete.
//   i  incremental. Prepared: i (opened with dirty tracking) all gen(i, 0),
//      full snapshot i.B.0.snap. Step n writes gen(i, n) to a drawn set of
//      pages (FUA) and takes i.B.n.snap on base i.B.(n-1).snap. Legal: each
//      named chain verifies and restores to exactly the pages as of its step.
//   x  restore. Prepared: x.B.a.snap and x.B.b.snap of x (gen(x, a), gen(x, b)).
//      Step n restores x from a (odd n) or b (even n). Legal: x is exactly
//      one of them, of its size; the one of the acked step if it stalled.
//   w  data path. Prepared: every 4 KiB block of w stamped with version 0
//      (FUA). Step n stamps a drawn set of 1-8 blocks with version n, by
//      write(FUA) (n % 3 == 0), write() then flush() (1), or stores through a
//      mapping then persist() (2). Legal: each word holds the word of a stamp
//      of its block whose version is at least that of the last acked step
//      writing the block; what no acked step covers may be old or new, per
//      8-byte word (a store through the mapping stops at any word).
// Every check also looks for leaks: a directory region's ns/ holds exactly
// its namespaces' files; a carved region's extents are disjoint, aligned and
// accounted for (layout_errors).
#include "powercut_ops.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "powercut_pattern.h"
#include "rawdax/rawdax.h"

namespace rawdax_powercut {
namespace {

constexpr uint64_t kBlock = 4096;
constexpr uint64_t kLookAhead = 4096;  // steps a thread may run past the last ack seen
const std::string kAllKinds = "crsixw";

uint64_t mix(uint64_t a, uint64_t b) {
  uint64_t z = a ^ (b + 0x9e3779b97f4a7c15ULL + (a << 6) + (a >> 2));
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

std::mutex g_print_mu;
std::string g_label = "ops";

void say(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void say(const char* fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  std::lock_guard<std::mutex> lock(g_print_mu);
  std::printf("%s: %s\n", g_label.c_str(), buf);
  std::fflush(stdout);
}

[[noreturn]] void die(const std::string& what) {
  say("OPS FAILED: %s", what.c_str());
  std::_Exit(1);
}

template <typename T>
T must(rawdax::Result<T> r, const std::string& what) {
  if (!r) die(what + ": " + r.error().message());
  return std::move(*r);
}

void must(const rawdax::Status& s, const std::string& what) {
  if (!s) die(what + ": " + s.error().message());
}

// Everything one boot's operations derive from: the same SEED and BOOT give
// the same names, sizes, page sets and bytes in ops-run and ops-check.
struct Plan {
  std::string region_spec, snapdir;
  uint64_t seed = 0, boot = 0;
  uint64_t base = 0;  // mix(seed, boot): what a wrong-seed check changes
  uint64_t unit = 0;
  std::string kinds = kAllKinds;

  uint64_t key(char kind, uint64_t a, uint64_t b = 0) const {
    return mix(mix(mix(base, static_cast<uint64_t>(kind)), a), b);
  }
  std::string boot_prefix(char kind) const {
    return std::string(1, kind) + "." + std::to_string(boot) + ".";
  }
  std::string snap(char kind, const std::string& step) const {
    return snapdir + "/" + boot_prefix(kind) + step + ".snap";
  }
  uint64_t create_size(uint64_t n) const { return (2 + key('c', n, 1) % 3) * unit; }
  uint64_t resize_size(uint64_t n) const { return n % 2 == 1 ? unit : 2 * unit; }
  // The pages step n of `i` writes (at least one).
  std::vector<uint64_t> incremental_pages(uint64_t n, uint64_t pages) const {
    std::vector<uint64_t> out;
    for (uint64_t p = 0; p < pages; ++p) {
      if (key('i', n, p + 7) % 8 == 0) out.push_back(p);
    }
    if (out.empty()) out.push_back(key('i', n, 3) % pages);
    return out;
  }
  // The blocks step n of `w` stamps: 1 to 8 of them, distinct.
  std::vector<uint64_t> data_blocks(uint64_t n, uint64_t blocks) const {
    std::set<uint64_t> out;
    const uint64_t count = 1 + key('w', n, 1) % 8;
    for (uint64_t k = 0; out.size() < count; ++k) out.insert(key('w', n, 100 + k) % blocks);
    return {out.begin(), out.end()};
  }
};

void fill_gen(std::byte* out, uint64_t size, uint64_t key, uint64_t first_word = 0) {
  for (uint64_t i = 0; i < size; i += 8) {
    const uint64_t w = pattern_word(key, first_word + i / 8);
    std::memcpy(out + i, &w, 8);
  }
}

std::vector<std::byte> gen_bytes(uint64_t size, uint64_t key) {
  std::vector<std::byte> out(size);
  fill_gen(out.data(), size, key);
  return out;
}

// Block b stamped with version v (a block's words of its own pattern).
void stamp(std::byte* out, uint64_t b, uint64_t v, const Plan& plan) {
  fill_gen(out, kBlock, plan.key('w', b, v));
}

std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return out;
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name != "." && name != "..") out.push_back(name);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::byte> read_all(rawdax::Region& region, const std::string& name) {
  auto dev = must(region.open_device(name), "open " + name);
  std::vector<std::byte> out(dev->size());
  must(dev->read(0, out), "read " + name);
  return out;
}

// --- The run -----------------------------------------------------------------

struct Runner {
  Plan plan;
  std::unique_ptr<rawdax::Region> region;
  uint64_t steps = 0;  // 0: until cut
  char cut_kind = 0;
  uint64_t cut_step = 0;
  std::string cut_text;
  uint64_t cut_after_ms = 0;
  bool until_cut = false;  // endless, the cut text printed elsewhere
  std::string barrier_dir;  // --barrier: wait here for the other processes
  uint64_t barrier_count = 0;

  // Prepared devices, kept open by their threads.
  std::unique_ptr<rawdax::Device> r_dev, s_dev, i_dev, w_dev;
  std::optional<rawdax::Mapping> w_map;

  void begin(char kind, const char* op, uint64_t n) { say("%c begin %s %" PRIu64, kind, op, n); }
  void ack(char kind, uint64_t n) {
    say("%c ack %" PRIu64, kind, n);
    if (kind == cut_kind && n == cut_step) {
      say("%s", cut_text.c_str());
      for (;;) std::this_thread::sleep_for(std::chrono::hours(1));  // the power cut comes
    }
  }

  void write_gen(rawdax::Device& dev, uint64_t size, uint64_t key, const std::string& what) {
    auto bytes = gen_bytes(size, key);
    must(dev.write(0, bytes, {.fua = true}), what);
  }

  void remove_files(char kind) {
    for (const std::string& f : list_dir(plan.snapdir)) {
      if (f.starts_with(std::string(1, kind) + ".")) ::unlink((plan.snapdir + "/" + f).c_str());
    }
  }

  void prepare(bool format) {
    auto& reg = *region;
    const uint64_t u = plan.unit;
    if (format) {
      // r first, then a one-unit guard: r's shrunk tail is a one-unit hole
      // that nothing else allocates (c and x take 2 U or more), so r can
      // always grow back in place on a carved region.
      for (auto [name, size] : {std::pair<const char*, uint64_t>{"r", 2 * u}, {"guard", u},
                                {"s", 2 * u}, {"i", 2 * u}, {"x", 2 * u}, {"w", 2 * u}}) {
        if (!reg.find(name)) must(reg.create_namespace({.name = name, .size = size}), "create " + std::string(name));
      }
    }
    if (plan.kinds.find('c') != std::string::npos) {
      for (const auto& ns : reg.list()) {
        if (ns.name.starts_with("c.")) must(reg.destroy_namespace(ns.name), "destroy " + ns.name);
      }
    }
    if (plan.kinds.find('r') != std::string::npos) {
      r_dev = must(reg.open_device("r"), "open r");
      if (r_dev->size() != 2 * u) must(r_dev->resize(2 * u), "resize r");
      write_gen(*r_dev, 2 * u, plan.key('r', 0), "write r");
    }
    if (plan.kinds.find('s') != std::string::npos) {
      remove_files('s');
      s_dev = must(reg.open_device("s"), "open s");
    }
    if (plan.kinds.find('i') != std::string::npos) {
      remove_files('i');
      i_dev = must(reg.open_device("i", {.track_dirty = true}), "open i");
      write_gen(*i_dev, i_dev->size(), plan.key('i', 0), "write i");
      must(i_dev->snapshot(plan.snap('i', "0")), "snapshot i");
    }
    if (plan.kinds.find('x') != std::string::npos) {
      remove_files('x');
      auto dev = must(reg.open_device("x"), "open x");
      for (const char* which : {"a", "b"}) {
        write_gen(*dev, dev->size(), plan.key('x', which[0]), "write x");
        must(dev->snapshot(plan.snap('x', which)), "snapshot x");
      }
    }
    if (plan.kinds.find('w') != std::string::npos) {
      w_dev = must(reg.open_device("w"), "open w");
      std::vector<std::byte> all(w_dev->size());
      for (uint64_t b = 0; b < all.size() / kBlock; ++b) stamp(all.data() + b * kBlock, b, 0, plan);
      must(w_dev->write(0, all, {.fua = true}), "write w");
      w_map.emplace(must(w_dev->map(0, w_dev->size(), rawdax::Access::ReadWrite), "map w"));
    }
  }

  bool more(uint64_t n) const { return steps == 0 || n <= steps; }

  // The operation of a step comes last, so that no later fsync of the step
  // (on ext4, any fsync commits the whole journal) makes it durable for it.
  void run_create() {
    for (uint64_t n = 1; more(n); ++n) {
      if (n > 2) {
        const std::string old = plan.boot_prefix('c') + std::to_string(n - 2);
        begin('c', "destroy", n);
        must(region->destroy_namespace(old), "destroy " + old);
      }
      if (n > 1) {
        const std::string last = plan.boot_prefix('c') + std::to_string(n - 1);
        begin('c', "fill", n);
        auto dev = must(region->open_device(last), "open " + last);
        auto bytes = gen_bytes(dev->size(), plan.key('c', n - 1));
        const uint64_t body = bytes.size() - kTrailer;
        for (uint64_t at = 0; at < body; at += kChunk) {
          const uint64_t len = std::min(kChunk, body - at);
          must(dev->write(at, std::span(bytes).subspan(at, len), {.fua = true}), "fill " + last);
        }
        must(dev->write(body, std::span(bytes).subspan(body), {.fua = true}), "fill " + last);
      }
      const std::string name = plan.boot_prefix('c') + std::to_string(n);
      begin('c', "create", n);
      must(region->create_namespace({.name = name, .size = plan.create_size(n)}), "create " + name);
      ack('c', n);
    }
  }

  void run_resize() {
    for (uint64_t n = 1; more(n); ++n) {
      begin('r', "refill", n);
      write_gen(*r_dev, r_dev->size(), plan.key('r', n), "write r");
      begin('r', "resize", n);
      must(r_dev->resize(plan.resize_size(n)), "resize r to " + std::to_string(plan.resize_size(n)));
      ack('r', n);
    }
  }

  void run_snapshot() {
    for (uint64_t n = 1; more(n); ++n) {
      begin('s', "fill", n);
      write_gen(*s_dev, s_dev->size(), plan.key('s', n), "write s");
      begin('s', "snapshot", n);
      must(s_dev->snapshot(plan.snap('s', std::to_string(n))), "snapshot s");
      ack('s', n);
      if (n > 2) ::unlink(plan.snap('s', std::to_string(n - 2)).c_str());
    }
  }

  void run_incremental() {
    std::vector<std::byte> page(kBlock);
    for (uint64_t n = 1; more(n); ++n) {
      begin('i', "fill", n);
      for (uint64_t p : plan.incremental_pages(n, i_dev->size() / kBlock)) {
        fill_gen(page.data(), kBlock, plan.key('i', n), p * kBlock / 8);
        must(i_dev->write(p * kBlock, page, {.fua = true}), "write i");
      }
      begin('i', "incremental", n);
      must(i_dev->snapshot(plan.snap('i', std::to_string(n)),
                           {.base = plan.snap('i', std::to_string(n - 1))}),
           "incremental snapshot of i");
      ack('i', n);
    }
  }

  void run_restore() {
    for (uint64_t n = 1; more(n); ++n) {
      begin('x', "restore", n);
      must(region->restore_namespace("x", plan.snap('x', n % 2 == 1 ? "a" : "b")), "restore x");
      ack('x', n);
    }
  }

  void run_data() {
    std::vector<std::byte> block(kBlock);
    const char* ops[] = {"write-fua", "write-flush", "persist"};
    for (uint64_t n = 1; more(n); ++n) {
      const auto blocks = plan.data_blocks(n, w_dev->size() / kBlock);
      begin('w', ops[n % 3], n);
      for (uint64_t b : blocks) {
        stamp(block.data(), b, n, plan);
        switch (n % 3) {
          case 0:
            must(w_dev->write(b * kBlock, block, {.fua = true}), "write w");
            break;
          case 1:
            must(w_dev->write(b * kBlock, block), "write w");
            break;
          default:
            std::memcpy(w_map->data() + b * kBlock, block.data(), kBlock);
            must(w_map->persist(w_map->data() + b * kBlock, kBlock), "persist w");
        }
      }
      if (n % 3 == 1) must(w_dev->flush(), "flush w");
      ack('w', n);
    }
  }
};

int ops_run(Runner& r, bool format) {
  r.region = must(rawdax::Region::open(r.plan.region_spec, {.create = format}),
                  "open " + r.plan.region_spec);
  const auto space = r.region->space();
  r.plan.unit = std::max<uint64_t>(space.carved ? space.align : 0, uint64_t{1} << 20);
  ::mkdir(r.plan.snapdir.c_str(), 0755);
  r.prepare(format);
  say("prepared (boot %" PRIu64 ", kinds %s, unit %" PRIu64 ")", r.plan.boot,
      r.plan.kinds.c_str(), r.plan.unit);
  if (!r.barrier_dir.empty()) {
    // No step (and so no cut) before every process has prepared: a check
    // takes each kind's preparation as done.
    const std::string mine = r.barrier_dir + "/" + g_label;
    if (FILE* f = std::fopen(mine.c_str(), "w")) std::fclose(f); else die("cannot create " + mine);
    while (list_dir(r.barrier_dir).size() < r.barrier_count) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  std::vector<std::thread> threads;
  for (char k : r.plan.kinds) {
    threads.emplace_back([&r, k] {
      switch (k) {
        case 'c': r.run_create(); break;
        case 'r': r.run_resize(); break;
        case 's': r.run_snapshot(); break;
        case 'i': r.run_incremental(); break;
        case 'x': r.run_restore(); break;
        case 'w': r.run_data(); break;
      }
    });
  }
  if (r.cut_after_ms > 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(r.cut_after_ms));
    say("%s", r.cut_text.c_str());
  }
  for (auto& t : threads) t.join();
  say("OPS RUN OK: %" PRIu64 " steps of each of %s", r.steps, r.plan.kinds.c_str());
  return 0;
}

// --- The check ---------------------------------------------------------------

struct Acked {
  uint64_t step = 0;
  bool stalled = false;  // nothing ran after it
  uint64_t hi() const { return stalled ? step : step + kLookAhead; }
};

struct Checker {
  Plan plan;
  rawdax::Region* region = nullptr;
  std::map<char, Acked> acked;
  std::shared_ptr<rawdax::Region> scratch;  // memfd: restores of snapshot files
  std::map<char, std::string> facts;       // what each kind was found in
  std::set<char> seeded;                   // kinds whose bytes only this seed explains

  // Restores `path` (verified first) into the scratch region and reads it back.
  std::optional<std::vector<std::byte>> restored(const std::string& path, std::string* why) {
    auto chain = rawdax::verify_snapshot(path);
    if (!chain) {
      *why = chain.error().message();
      return std::nullopt;
    }
    auto info = scratch->restore_namespace("t", path, {.force = true});
    if (!info) die("verify accepted " + path + " but restore refused it: " + info.error().message());
    auto bytes = read_all(*scratch, "t");
    must(scratch->destroy_namespace("t"), "destroy the scratch namespace");
    return bytes;
  }

  std::string check_create() {
    std::map<uint64_t, rawdax::NamespaceInfo> mine;
    for (const auto& ns : region->list()) {
      if (!ns.name.starts_with("c.")) continue;
      if (!ns.name.starts_with(plan.boot_prefix('c'))) return ns.name + " is from another boot";
      mine[std::strtoull(ns.name.c_str() + plan.boot_prefix('c').size(), nullptr, 10)] = ns;
    }
    const Acked a = acked['c'];
    if (mine.empty()) return a.step == 0 ? "" : "no c namespace, step " + std::to_string(a.step) + " was acked";
    const uint64_t m = mine.rbegin()->first;
    if (m < a.step || m > a.hi() + 1) {
      return "newest c namespace is step " + std::to_string(m) + ", acked " + std::to_string(a.step);
    }
    if (mine.size() > 2 || (mine.size() == 2 && mine.begin()->first != m - 1)) {
      std::string names;
      for (auto& [n, ns] : mine) names += " " + ns.name;
      return "c namespaces" + names + " are not {M} or {M-1, M}";
    }
    // Alone, M-1 was destroyed: step M+1 ran, so M+1 was not past the stall.
    if (mine.size() == 1 && m > 1 && m + 1 > a.hi()) {
      return "only " + mine.begin()->second.name + " is left, but step " + std::to_string(m + 1) +
             " that destroys its predecessor never ran (acked " + std::to_string(a.step) + ")";
    }
    std::string state;
    for (auto& [n, ns] : mine) {
      if (ns.size != plan.create_size(n)) return ns.name + " has size " + std::to_string(ns.size);
      auto bytes = read_all(*region, ns.name);
      const bool zero = std::all_of(bytes.begin(), bytes.end(), [](std::byte b) { return b == std::byte{0}; });
      const Verdict v = classify(bytes.data(), bytes.size(), plan.key('c', n));
      if (v.fill == Fill::kIllegal) return ns.name + ": " + v.why;
      // With two, the older is filled and the newer untouched; alone, the
      // newest may be anywhere in its fill.
      if (mine.size() == 2 && n == m - 1 && v.fill != Fill::kComplete) return ns.name + " is not filled, but " + std::to_string(m) + " was created";
      if (mine.size() == 2 && n == m && !zero) return ns.name + " was written before its step filled it";
      state = zero ? "untouched" : v.fill == Fill::kComplete ? "filled" : "being filled";
      if (!zero) seeded.insert('c');
    }
    facts['c'] = std::to_string(mine.size()) + " namespaces, newest step " + std::to_string(m) + " " + state;
    return "";
  }

  // Word i of r as step g leaves it: its pattern below the size both steps
  // had, zeros in what step g grew.
  uint64_t resize_word(uint64_t g, uint64_t i) const {
    if (g == 0) return pattern_word(plan.key('r', 0), i);
    const uint64_t kept = std::min(plan.resize_size(g - 1), plan.resize_size(g)) / 8;
    return i < kept ? pattern_word(plan.key('r', g), i) : 0;
  }

  std::string check_resize() {
    const auto bytes = read_all(*region, "r");
    const uint64_t size = bytes.size(), words = size / 8;
    auto word = [&](uint64_t i) {
      uint64_t w;
      std::memcpy(&w, bytes.data() + i * 8, 8);
      return w;
    };
    const Acked a = acked['r'];
    for (uint64_t g = a.step; g <= a.hi(); ++g) {
      if (plan.resize_size(g) != size) continue;
      uint64_t i = 0;
      while (i < words && word(i) == resize_word(g, i)) ++i;
      if (i == words) {
        facts['r'] = "size " + std::to_string(size) + ", step " + std::to_string(g) + " complete";
        seeded.insert('r');
        return "";
      }
      // Step g+1 in flight: writing its pattern over this size, not resized
      // yet; never the acked step, whose resize returned.
      if (g + 1 <= a.step) continue;
      const uint64_t next = plan.key('r', g + 1);
      for (; i < words; ++i) {
        if (word(i) != resize_word(g, i) && word(i) != pattern_word(next, i)) break;
      }
      if (i == words && g + 1 <= a.hi()) {
        facts['r'] = "size " + std::to_string(size) + ", step " + std::to_string(g + 1) + " writing";
        seeded.insert('r');
        return "";
      }
    }
    return "r (" + std::to_string(size) + " bytes) is no legal state of a step from " +
           std::to_string(a.step);
  }

  // Snapshot files of kind `kind` by step; temporaries (".snap.tmp.PID") apart.
  std::string scan_files(char kind, std::map<uint64_t, std::string>* named,
                         std::vector<std::pair<uint64_t, std::string>>* temporary) {
    const std::string prefix = plan.boot_prefix(kind);
    for (const std::string& f : list_dir(plan.snapdir)) {
      if (!f.starts_with(std::string(1, kind) + ".")) continue;
      if (!f.starts_with(prefix)) return f + " is from another boot";
      const uint64_t n = std::strtoull(f.c_str() + prefix.size(), nullptr, 10);
      const std::string path = plan.snapdir + "/" + f;
      if (f.ends_with(".snap")) {
        (*named)[n] = path;
      } else {
        temporary->emplace_back(n, path);
      }
    }
    return "";
  }

  // Each named file must verify and restore to expected(n); each temporary
  // one must fail verify or be whole; the newest named one >= the ack.
  template <typename Expected>
  std::string check_files(char kind, Expected&& expected) {
    std::map<uint64_t, std::string> named;
    std::vector<std::pair<uint64_t, std::string>> temporary;
    if (std::string e = scan_files(kind, &named, &temporary); !e.empty()) return e;
    const Acked a = acked[kind];
    const bool none_yet = named.empty() && a.step == 0;  // cut before the first one was named
    if (!none_yet && (named.empty() || named.rbegin()->first < a.step ||
                      named.rbegin()->first > a.hi() + 1)) {
      return std::string("the newest ") + kind + " snapshot is not of a step from " + std::to_string(a.step);
    }
    for (auto& [n, path] : named) {
      std::string why;
      auto bytes = restored(path, &why);
      if (!bytes) return path + " is named but does not verify: " + why;
      if (*bytes != expected(n)) return path + " verifies but restores to other bytes than step " + std::to_string(n);
    }
    int refused = 0;
    for (auto& [n, path] : temporary) {
      std::string why;
      auto bytes = restored(path, &why);
      if (!bytes) {
        ++refused;
      } else if (*bytes != expected(n)) {
        return path + " (unfinished) verifies but is not step " + std::to_string(n);
      }
    }
    if (named.empty()) return "";
    seeded.insert(kind);
    facts[kind] = std::to_string(named.size()) + " snapshots up to step " +
                  std::to_string(named.rbegin()->first) + ", " + std::to_string(temporary.size()) +
                  " unfinished (" + std::to_string(refused) + " refused by verify)";
    return "";
  }

  std::string check_snapshot() {
    const uint64_t size = must(region->find("s"), "find s").size;
    return check_files('s', [&](uint64_t n) { return gen_bytes(size, plan.key('s', n)); });
  }

  std::string check_incremental() {
    const uint64_t size = must(region->find("i"), "find i").size, pages = size / kBlock;
    return check_files('i', [&](uint64_t n) {
      std::vector<uint64_t> gen(pages, 0);
      for (uint64_t j = 1; j <= n; ++j) {
        for (uint64_t p : plan.incremental_pages(j, pages)) gen[p] = j;
      }
      std::vector<std::byte> out(size);
      for (uint64_t p = 0; p < pages; ++p) {
        fill_gen(out.data() + p * kBlock, kBlock, plan.key('i', gen[p]), p * kBlock / 8);
      }
      return out;
    });
  }

  std::string check_restore() {
    const auto bytes = read_all(*region, "x");
    const Acked a = acked['x'];
    for (const char* which : {"a", "b"}) {
      if (bytes != gen_bytes(bytes.size(), plan.key('x', which[0]))) continue;
      const char* due = a.step % 2 == 1 ? "a" : "b";
      if (a.stalled && a.step > 0 && std::strcmp(which, due) != 0) {
        return std::string("x holds snapshot ") + which + ", but step " + std::to_string(a.step) +
               " (restore of " + due + ") was the last";
      }
      std::string why;
      if (!restored(plan.snap('x', which), &why)) return "x's snapshot " + std::string(which) + ": " + why;
      facts['x'] = std::string("snapshot ") + which;
      seeded.insert('x');
      return "";
    }
    return "x (" + std::to_string(bytes.size()) + " bytes) is neither snapshot a nor b";
  }

  std::string check_data() {
    const auto bytes = read_all(*region, "w");
    const uint64_t blocks = bytes.size() / kBlock;
    const Acked a = acked['w'];
    std::vector<std::vector<uint64_t>> versions(blocks, std::vector<uint64_t>{0});
    std::vector<uint64_t> required(blocks, 0);
    for (uint64_t j = 1; j <= a.hi(); ++j) {
      for (uint64_t b : plan.data_blocks(j, blocks)) {
        versions[b].push_back(j);
        if (j <= a.step) required[b] = j;
      }
    }
    // Per 8-byte word: a store through the mapping that the cut stopped
    // leaves a block part old, part new, at any word.
    std::vector<std::vector<std::byte>> stamps;
    uint64_t newer = 0;
    for (uint64_t b = 0; b < blocks; ++b) {
      stamps.clear();
      std::vector<uint64_t> legal;
      for (uint64_t v : versions[b]) {
        if (v < required[b]) continue;
        legal.push_back(v);
        stamps.emplace_back(kBlock);
        stamp(stamps.back().data(), b, v, plan);
      }
      for (uint64_t w = 0; w < kBlock / 8; ++w) {
        const std::byte* got = bytes.data() + b * kBlock + w * 8;
        size_t k = 0;
        while (k < legal.size() && std::memcmp(got, stamps[k].data() + w * 8, 8) != 0) ++k;
        if (k == legal.size()) {
          return "w block " + std::to_string(b) + " word at offset " +
                 std::to_string(b * kBlock + w * 8) + " holds no version from " +
                 std::to_string(required[b]) + " (the last acked write of the block) on";
        }
        newer += legal[k] > a.step;
      }
    }
    seeded.insert('w');
    facts['w'] = std::to_string(blocks) + " blocks as acked, " + std::to_string(newer) +
                 " words newer than the ack";
    return "";
  }

  std::map<char, std::string> check_all() {
    std::map<char, std::string> errors;
    for (char k : plan.kinds) {
      switch (k) {
        case 'c': errors[k] = check_create(); break;
        case 'r': errors[k] = check_resize(); break;
        case 's': errors[k] = check_snapshot(); break;
        case 'i': errors[k] = check_incremental(); break;
        case 'x': errors[k] = check_restore(); break;
        case 'w': errors[k] = check_data(); break;
      }
    }
    return errors;
  }
};

// What a crash may leave behind and the open must have removed.
std::string leaks(rawdax::Region& region, const std::string& spec) {
  const auto list = region.list();
  const auto space = region.space();
  if (space.carved) {
    auto errors = layout_errors(list, space);
    return errors.empty() ? "" : errors.front();
  }
  if (spec.find(':') != std::string::npos) return "";
  std::set<std::string> want, have;
  for (const auto& ns : list) want.insert(ns.uuid);
  for (const auto& f : list_dir(spec + "/ns")) have.insert(f);
  for (const auto& f : have) {
    if (!want.contains(f)) return spec + "/ns/" + f + " is named by no namespace";
  }
  for (const auto& f : want) {
    if (!have.contains(f)) return "namespace file " + f + " is missing from " + spec + "/ns";
  }
  for (const auto& f : list_dir(spec)) {
    if (f.starts_with("rawdax.meta.tmp.")) return spec + "/" + f + " is left over";
  }
  return "";
}

int ops_check(Checker& c) {
  auto region = must(rawdax::Region::open(c.plan.region_spec), "open " + c.plan.region_spec);
  c.region = region.get();
  c.scratch = must(rawdax::Region::open("memfd:"), "open a memfd: region");
  const auto space = region->space();
  c.plan.unit = std::max<uint64_t>(space.carved ? space.align : 0, uint64_t{1} << 20);
  if (std::string leak = leaks(*region, c.plan.region_spec); !leak.empty()) die("leak: " + leak);
  for (auto& [kind, error] : c.check_all()) {
    if (!error.empty()) die(std::string(1, kind) + ": " + error);
  }
  std::string summary;
  for (auto& [kind, fact] : c.facts) summary += std::string(" ") + kind + ": " + fact + ";";
  // The same bytes under another seed must fail every kind.
  Checker wrong = c;
  wrong.plan.base = mix(c.plan.base, 1);
  wrong.facts.clear();
  wrong.seeded.clear();
  for (auto& [kind, error] : wrong.check_all()) {
    // Only kinds whose bytes carry the seed (an untouched namespace does not).
    if (error.empty() && c.seeded.contains(kind)) {
      die(std::string(1, kind) + ": the check passes under another seed too");
    }
  }
  // The stalled kind one step further on, as if its last step were lost:
  // must fail too, so a lost acknowledged step cannot pass.
  std::string lost;
  for (auto& [kind, a] : c.acked) {
    if (!a.stalled || c.plan.kinds.find(kind) == std::string::npos) continue;
    Checker further = c;
    further.plan.kinds = std::string(1, kind);
    further.acked[kind].step = a.step + 1;
    if (further.check_all()[kind].empty()) {
      die(std::string(1, kind) + ": the check passes as if step " + std::to_string(a.step + 1) +
          " had been acknowledged too");
    }
    lost = std::string(", step ") + std::to_string(a.step + 1) + " of " + kind + " refused";
  }
  say("OPS CHECK OK (boot %" PRIu64 "):%s another seed refused for each%s", c.plan.boot,
      summary.c_str(), lost.c_str());
  return 0;
}

int usage() {
  std::fprintf(stderr,
               "usage: rawdax_powercut ops-run REGION SNAPDIR SEED BOOT [--label L] [--kinds KINDS]\n"
               "                       [--format] [--steps N | --cut KIND:STEP:TEXT | --cut-after-ms MS:TEXT |\n"
               "                        --until-cut] [--barrier DIR:N]\n"
               "       rawdax_powercut ops-check REGION SNAPDIR SEED BOOT [--label L] [--kinds KINDS]\n"
               "                       [--acked K=N[!],...]\n");
  return 2;
}

}  // namespace

int ops_main(int argc, char** argv) {
  if (argc < 6) return usage();
  const std::string mode = argv[1];
  if (mode != "ops-run" && mode != "ops-check") return usage();
  Plan plan;
  plan.region_spec = argv[2];
  plan.snapdir = argv[3];
  plan.seed = std::strtoull(argv[4], nullptr, 0);
  plan.boot = std::strtoull(argv[5], nullptr, 0);
  plan.base = mix(plan.seed, plan.boot);
  Runner runner;
  Checker checker;
  bool format = false;
  for (int i = 6; i < argc; ++i) {
    const std::string_view a = argv[i];
    const bool has_value = i + 1 < argc;
    if (a == "--label" && has_value) {
      g_label = argv[++i];
    } else if (a == "--kinds" && has_value) {
      plan.kinds = argv[++i];
      for (char k : plan.kinds) {
        if (kAllKinds.find(k) == std::string::npos) return usage();
      }
    } else if (a == "--barrier" && has_value) {
      const std::string v = argv[++i];
      const size_t colon = v.rfind(':');
      if (colon == std::string::npos) return usage();
      runner.barrier_dir = v.substr(0, colon);
      runner.barrier_count = std::strtoull(v.c_str() + colon + 1, nullptr, 10);
    } else if (a == "--until-cut") {
      runner.until_cut = true;
    } else if (a == "--format") {
      format = true;
    } else if (a == "--steps" && has_value) {
      runner.steps = std::strtoull(argv[++i], nullptr, 0);
    } else if (a == "--cut" && has_value) {
      const std::string v = argv[++i];
      const size_t colon = v.find(':', 2);
      if (v.size() < 5 || v[1] != ':' || colon == std::string::npos) return usage();
      runner.cut_kind = v[0];
      runner.cut_step = std::strtoull(v.c_str() + 2, nullptr, 10);
      runner.cut_text = v.substr(colon + 1);
    } else if (a == "--cut-after-ms" && has_value) {
      const std::string v = argv[++i];
      const size_t colon = v.find(':');
      if (colon == std::string::npos) return usage();
      runner.cut_after_ms = std::strtoull(v.c_str(), nullptr, 10);
      runner.cut_text = v.substr(colon + 1);
    } else if (a == "--acked" && has_value) {
      std::string v = argv[++i];
      for (size_t at = 0; at < v.size();) {
        size_t end = v.find(',', at);
        if (end == std::string::npos) end = v.size();
        const std::string item = v.substr(at, end - at);
        if (item.size() < 3 || item[1] != '=') return usage();
        checker.acked[item[0]] = {std::strtoull(item.c_str() + 2, nullptr, 10), item.back() == '!'};
        at = end + 1;
      }
    } else {
      return usage();
    }
  }
  if (mode == "ops-check") {
    checker.plan = plan;
    return ops_check(checker);
  }
  // Exactly one of: --steps, a cut, --until-cut.
  if ((runner.steps > 0) + !runner.cut_text.empty() + runner.until_cut != 1) return usage();
  runner.plan = plan;
  return ops_run(runner, format);
}

}  // namespace rawdax_powercut
