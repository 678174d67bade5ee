#include "daemon/json_forms.h"

namespace rawdax::control {

nlohmann::json badblocks_json(const std::vector<BadRange>& badblocks) {
  nlohmann::json out = nlohmann::json::array();
  for (const BadRange& r : badblocks) out.push_back({{"offset", r.offset}, {"length", r.length}});
  return out;
}

nlohmann::json namespace_json(const NamespaceInfo& ns) {
  nlohmann::json out = {{"name", ns.name},   {"uuid", ns.uuid},
                        {"size", ns.size},   {"mode", ns.mode},
                        {"path", ns.path},   {"offset", ns.offset},
                        {"badblocks", badblocks_json(ns.badblocks)}};
  // Only while a lazy restore is incomplete.
  if (ns.restore) {
    const RestoreState& r = *ns.restore;
    out["restore"] = {{"state", r.filling ? "filling" : "incomplete"},
                      {"snapshot", r.snapshot},
                      {"checksum", r.checksum},
                      {"pages_filled", r.pages_filled},
                      {"pages_total", r.pages_total},
                      {"error", r.error}};
  }
  return out;
}

nlohmann::json export_json(const NbdExportInfo& e, const std::string& uri) {
  nlohmann::json out = {{"name", e.name},
                        {"kind", e.kind},
                        {"uri", uri},
                        {"namespace", e.namespace_name},
                        {"size", e.size},
                        {"state", e.broken ? "broken" : "ok"}};
  if (e.kind == "snapshot") {
    out["file"] = e.file;
    out["taken_at"] = e.taken_at;
    out["base_export"] = e.base_export;
  }
  if (e.broken) out["reason"] = e.reason;
  return out;
}

nlohmann::json capabilities_json(const Capabilities& caps) {
  const KernelFeatures& k = caps.kernel;
  return {{"media",
           {{"kind", to_string(caps.kind)},
            {"filesystem", caps.filesystem},
            {"persist", to_string(caps.persist)},
            {"flush_instruction", to_string(caps.flush_instruction)},
            {"huge_page_size", caps.huge_page_size},
            {"alignment", caps.alignment},
            {"map_sync", caps.map_sync},
            {"punch_hole", caps.punch_hole},
            {"uffd_wp_sync", caps.uffd_wp_sync},
            {"uffd_wp_async", caps.uffd_wp_async},
            {"hugetlb", caps.hugetlb}}},
          {"engine", to_string(caps.engine)},
          {"privilege", {{"uffd_mode", to_string(caps.uffd_mode)}}},
          {"kernel",
           {{"release", k.release},
            {"uffd_wp_sync", k.uffd_wp_sync},
            {"uffd_wp_async", k.uffd_wp_async},
            {"uffd_wp_hugetlbfs_shmem", k.uffd_wp_hugetlbfs_shmem},
            {"uffd_wp_unpopulated", k.uffd_wp_unpopulated},
            {"pagemap_scan", k.pagemap_scan},
            {"map_sync", k.map_sync}}},
          {"page_size", caps.page_size}};
}

nlohmann::json space_json(const RegionSpace& s) {
  nlohmann::json j = {{"carved", s.carved},
                      {"align", s.align},
                      {"free", s.free},
                      {"largest_free_extent", s.largest_free}};
  if (s.carved) {
    j["device_size"] = s.device_size;
    j["label_area_size"] = s.label_area_size;
    j["label_slots"] = s.label_slots;
    if (!s.recovered_from.empty()) j["recovered_from"] = s.recovered_from;
  }
  return j;
}

nlohmann::json snapshot_json(const SnapshotInfo& s) {
  nlohmann::json j = {{"path", s.path},
                      {"id", s.id},
                      {"base_id", s.base_id},
                      {"base_path", s.base_path},
                      {"source_uuid", s.source_uuid},
                      {"namespace_size", s.namespace_size},
                      {"page_size", s.page_size},
                      {"pages", s.pages},
                      {"bytes_written", s.bytes_written}};
  if (s.duration_ns > 0) {
    j["duration_ns"] = s.duration_ns;
    j["max_writer_stall_ns"] = s.max_writer_stall_ns;
  }
  if (!s.vm_snapshot.empty()) {
    j["vm_snapshot"] = s.vm_snapshot;
    j["vm_pause_ns"] = s.vm_pause_ns;
  }
  return j;
}

nlohmann::json stats_json(const std::string& name, const DeviceStats& s) {
  return nlohmann::json{{"name", name},
          {"reads", s.reads},
          {"writes", s.writes},
          {"bytes_read", s.bytes_read},
          {"bytes_written", s.bytes_written},
          {"write_zeroes", s.write_zeroes},
          {"discards", s.discards},
          {"flushes", s.flushes},
          {"maps", s.maps},
          {"live_mappings", s.live_mappings},
          {"revoked_mappings", s.revoked_mappings},
          {"media_errors", s.media_errors},
          {"bad_ranges", s.bad_ranges},
          {"dirty_pages", s.dirty_pages},
          {"synced_pages", s.synced_pages},
          {"write_faults", s.write_faults},
          {"freezes", s.freezes},
          {"stall_total_ns", s.stall_total_ns},
          {"stall_max_ns", s.stall_max_ns},
          {"parked_writers", s.parked_writers}};
}

}  // namespace rawdax::control
