#include "region/metadata.h"

#include <xxhash.h>

#include <cinttypes>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "common/uuid.h"
#include "region/bad_ranges.h"
#include "region/names.h"

namespace rawdax::internal {
namespace {

constexpr int kVersion = 1;
constexpr char kMagic[] = "RAWDAXMETA";

std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016" PRIx64, v);
  return buf;
}

// A fuzzing build accepts any checksum, so that mutated bodies reach the JSON
// decoding behind it (as the label area and the snapshot reader do).
bool checksum_ok(std::string_view stored, std::string_view json) {
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
  (void)stored;
  (void)json;
  return true;
#else
  return hex64(XXH64(json.data(), json.size(), 0)) == stored;
#endif
}

}  // namespace

std::string encode_metadata(const RegionMetadata& meta) {
  nlohmann::json body;
  body["generation"] = meta.generation;
  body["region_uuid"] = meta.region_uuid;
  body["namespaces"] = nlohmann::json::array();
  for (const auto& ns : meta.namespaces) {
    nlohmann::json entry = {
        {"name", ns.name}, {"uuid", ns.uuid}, {"size", ns.size}, {"mode", ns.mode}};
    // Only when there are any: a record without bad blocks stays what older
    // versions wrote (and read; they ignore keys they do not know).
    if (!ns.badblocks.empty()) {
      entry["badblocks"] = nlohmann::json::array();
      for (const BadRange& r : ns.badblocks) {
        entry["badblocks"].push_back({{"offset", r.offset}, {"length", r.length}});
      }
    }
    // Only while a lazy restore is incomplete (see RestoreState).
    if (ns.restore) {
      entry["restore"] = {{"snapshot", ns.restore->snapshot}, {"checksum", ns.restore->checksum}};
    }
    body["namespaces"].push_back(std::move(entry));
  }
  std::string json = body.dump(1);
  json += '\n';
  std::string out = std::string(kMagic) + " " + std::to_string(kVersion) + " " +
                    hex64(XXH64(json.data(), json.size(), 0)) + " " +
                    std::to_string(json.size()) + "\n";
  return out + json;
}

Result<RegionMetadata> decode_metadata(std::string_view bytes, const std::string& source) {
  auto corrupt = [&](const std::string& why) {
    return Error(std::errc::illegal_byte_sequence, "corrupt region metadata " + source + ": " + why);
  };
  auto eol = bytes.find('\n');
  if (eol == std::string_view::npos || eol > 128) return corrupt("no header line");
  std::string header(bytes.substr(0, eol));
  char magic[16] = {};
  int version = 0;
  char sum_hex[17] = {};
  unsigned long long length = 0;
  if (std::sscanf(header.c_str(), "%15s %d %16s %llu", magic, &version, sum_hex, &length) != 4 ||
      std::string(magic) != kMagic) {
    return corrupt("bad header '" + header + "'");
  }
  if (version != kVersion) return corrupt("unsupported version " + std::to_string(version));
  std::string_view json = bytes.substr(eol + 1);
  // NUL padding (a hugetlbfs file is whole huge pages) is not part of it.
  if (json.size() > length &&
      json.find_first_not_of('\0', static_cast<size_t>(length)) == std::string_view::npos) {
    json = json.substr(0, static_cast<size_t>(length));
  }
  if (json.size() != length) {
    return corrupt("length " + std::to_string(json.size()) + " but header says " +
                   std::to_string(length));
  }
  if (!checksum_ok(sum_hex, json)) return corrupt("checksum mismatch");

  nlohmann::json body = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded() || !body.is_object()) return corrupt("body is not a JSON object");
  RegionMetadata meta;
  auto gen = body.find("generation");
  auto uuid = body.find("region_uuid");
  auto list = body.find("namespaces");
  if (gen == body.end() || !gen->is_number_unsigned() || uuid == body.end() ||
      !uuid->is_string() || list == body.end() || !list->is_array()) {
    return corrupt("missing generation, region_uuid or namespaces");
  }
  meta.generation = gen->get<uint64_t>();
  meta.region_uuid = uuid->get<std::string>();
  for (const auto& entry : *list) {
    if (!entry.is_object() || !entry.contains("name") || !entry["name"].is_string() ||
        !entry.contains("uuid") || !entry["uuid"].is_string() || !entry.contains("size") ||
        !entry["size"].is_number_unsigned() || !entry.contains("mode") ||
        !entry["mode"].is_string()) {
      return corrupt("malformed namespace entry");
    }
    NamespaceInfo ns;
    ns.name = entry["name"].get<std::string>();
    ns.uuid = entry["uuid"].get<std::string>();
    ns.size = entry["size"].get<uint64_t>();
    ns.mode = entry["mode"].get<std::string>();
    if (!validate_namespace_name(ns.name)) return corrupt("bad namespace name '" + ns.name + "'");
    if (!is_uuid(ns.uuid)) return corrupt("bad uuid for namespace " + ns.name);
    if (ns.size == 0) return corrupt("zero size for namespace " + ns.name);
    // Optional: records written before bad-block lists have none.
    if (auto bad = entry.find("badblocks"); bad != entry.end()) {
      if (!bad->is_array()) return corrupt("badblocks of namespace " + ns.name + " is not a list");
      for (const auto& r : *bad) {
        if (!r.is_object() || !r.contains("offset") || !r["offset"].is_number_unsigned() ||
            !r.contains("length") || !r["length"].is_number_unsigned()) {
          return corrupt("malformed bad block of namespace " + ns.name);
        }
        ns.badblocks.push_back({r["offset"].get<uint64_t>(), r["length"].get<uint64_t>()});
      }
      if (!internal::valid_bad_ranges(ns.badblocks, ns.size)) {
        return corrupt("bad blocks of namespace " + ns.name +
                       " are unsorted, overlapping, empty or past its size");
      }
    }
    if (auto restore = entry.find("restore"); restore != entry.end()) {
      if (!restore->is_object() || !restore->contains("snapshot") ||
          !(*restore)["snapshot"].is_string() || !restore->contains("checksum") ||
          !(*restore)["checksum"].is_string() ||
          (*restore)["snapshot"].get<std::string>().empty()) {
        return corrupt("malformed restore state of namespace " + ns.name);
      }
      ns.restore = RestoreState{.snapshot = (*restore)["snapshot"].get<std::string>(),
                                .checksum = (*restore)["checksum"].get<std::string>()};
    }
    for (const auto& seen : meta.namespaces) {
      if (seen.name == ns.name || seen.uuid == ns.uuid) {
        return corrupt("duplicate namespace " + ns.name);
      }
    }
    meta.namespaces.push_back(std::move(ns));
  }
  return meta;
}

}  // namespace rawdax::internal
