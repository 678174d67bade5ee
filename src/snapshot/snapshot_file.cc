#include "snapshot/snapshot_file.h"

#include "common/uuid.h"

#include "common/crash_point.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "media/files.h"

namespace rawdax::internal {
namespace {

constexpr char kMagic[] = "RAWDAXSNAP 2\n";
constexpr uint64_t kVersion = 2;

// Fuzzing builds skip the checksums of the header, bitmap and table, so that
// the fuzzer reaches the parsing behind them (it cannot forge an XXH3).
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
constexpr bool kFuzzing = true;
#else
constexpr bool kFuzzing = false;
#endif  // 2: XXH3-64 checksums (1 had XXH64)

// Every checksum of the format: XXH3-64, about twice XXH64's speed, which
// matters when a snapshot streams at memory speed.
uint64_t hash(const void* data, size_t size, uint64_t seed) {
  return XXH3_64bits_withSeed(data, size, seed);
}
constexpr uint64_t kHeaderBytes = 4096;

nlohmann::json header_json(const SnapshotHeader& h, bool with_checksum) {
  nlohmann::json j = {{"version", h.version},
                      {"id", h.id},
                      {"source_uuid", h.source_uuid},
                      {"namespace_size", h.namespace_size},
                      {"page_size", h.page_size},
                      {"base_id", h.base_id},
                      {"base_checksum", h.base_checksum},
                      {"base_path", h.base_path},
                      {"stored_pages", h.stored_pages},
                      {"bitmap_checksum", h.bitmap_checksum},
                      {"table_checksum", h.table_checksum}};
  // Only when known: a file without them hashes as it did when written.
  if (!h.namespace_name.empty()) j["namespace"] = h.namespace_name;
  if (!h.taken_at.empty()) j["taken_at"] = h.taken_at;
  if (with_checksum) j["header_checksum"] = h.header_checksum;
  return j;
}

std::string checksum_of_json(const SnapshotHeader& h) {
  std::string text = header_json(h, false).dump();
  return hex64(hash(text.data(), text.size(), 0));
}

Status pread_all(int fd, void* data, size_t len, uint64_t offset, const std::string& what) {
  auto p = static_cast<char*>(data);
  while (len > 0) {
    ssize_t n = ::pread(fd, p, len, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_error(errno, "cannot read " + what);
    if (n == 0) {
      return Error(std::errc::illegal_byte_sequence,
                   "snapshot " + what + " is truncated at offset " + std::to_string(offset));
    }
    p += n;
    len -= static_cast<size_t>(n);
    offset += static_cast<uint64_t>(n);
  }
  return ok();
}

}  // namespace

namespace {

std::string utc_timestamp(std::time_t t) {
  std::tm utc;
  gmtime_r(&t, &utc);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &utc);
  return stamp;
}

}  // namespace

std::string utc_timestamp_now() { return utc_timestamp(std::time(nullptr)); }

std::string utc_timestamp_of_mtime(int fd) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return "";
  return utc_timestamp(st.st_mtime);
}

std::string hex64(uint64_t value) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016" PRIx64, value);
  return buf;
}

Result<SnapshotWriter> SnapshotWriter::create(const std::string& path, SnapshotHeader header) {
  SnapshotWriter w;
  w.path_ = path;
  w.tmp_path_ = path + ".tmp." + std::to_string(::getpid());
  w.header_ = std::move(header);
  ::unlink(w.tmp_path_.c_str());
  auto fd = create_sized_file(w.tmp_path_, w.header_.file_size(), /*allocate=*/false);
  if (!fd) return fd.error().with_context("snapshot " + path + ": ");
  w.fd_ = std::move(*fd);
  w.bitmap_.assign(w.header_.bitmap_bytes(), 0);
  w.checksums_.assign(w.header_.page_count(), 0);
  return w;
}

SnapshotWriter::~SnapshotWriter() {
  if (!done_ && !tmp_path_.empty() && fd_.valid()) ::unlink(tmp_path_.c_str());
}

uint64_t page_checksum(std::span<const std::byte> data, uint64_t index, uint64_t page_size) {
  if (data.size() >= page_size) return hash(data.data(), page_size, index);
  // A short last page is checked as if zero-padded, as it reads back.
  std::vector<std::byte> padded(page_size, std::byte{0});
  std::memcpy(padded.data(), data.data(), data.size());
  return hash(padded.data(), padded.size(), index);
}

Status SnapshotWriter::write_pages(uint64_t first_page, std::span<const std::byte> data) {
  const uint64_t ps = header_.page_size;
  RAWDAX_RETURN_IF_ERROR(pwrite_all(fd_.get(), data.data(), data.size(),
                                    header_.data_offset() + first_page * ps, tmp_path_));
  std::vector<uint64_t> sums;
  for (uint64_t done = 0; done < data.size(); done += ps) {
    sums.push_back(page_checksum(data.subspan(done, std::min<uint64_t>(ps, data.size() - done)),
                                 first_page + sums.size(), ps));
  }
  std::lock_guard<std::mutex> lock(*mu_);
  for (uint64_t i = 0, page = first_page; i < sums.size(); ++i, ++page) {
    if (!has_page(page)) ++header_.stored_pages;
    bitmap_[page / 8] = static_cast<uint8_t>(bitmap_[page / 8] | (1u << (page % 8)));
    checksums_[page] = sums[i];
  }
  return ok();
}

Result<SnapshotHeader> SnapshotWriter::finish() {
  crash_point("snapshot pages written");
  header_.bitmap_checksum = hex64(hash(bitmap_.data(), bitmap_.size(), 0));
  header_.table_checksum =
      hex64(hash(checksums_.data(), checksums_.size() * sizeof(uint64_t), 0));
  header_.header_checksum = checksum_of_json(header_);
  std::string text = kMagic + header_json(header_, true).dump();
  if (text.size() > kHeaderBytes) {
    return Error(std::errc::filename_too_long, "snapshot " + path_ + ": header too long");
  }
  text.resize(kHeaderBytes, '\0');
  RAWDAX_RETURN_IF_ERROR(pwrite_all(fd_.get(), bitmap_.data(), bitmap_.size(),
                                    header_.bitmap_offset(), tmp_path_));
  RAWDAX_RETURN_IF_ERROR(pwrite_all(fd_.get(), checksums_.data(),
                                    checksums_.size() * sizeof(uint64_t), header_.table_offset(),
                                    tmp_path_));
  RAWDAX_RETURN_IF_ERROR(pwrite_all(fd_.get(), text.data(), text.size(), 0, tmp_path_));
  crash_point("snapshot header written");
  if (::fsync(fd_.get()) != 0) return errno_error(errno, "fsync " + tmp_path_);
  crash_point("snapshot fsynced");
  if (::rename(tmp_path_.c_str(), path_.c_str()) != 0) {
    return errno_error(errno, "cannot rename " + tmp_path_ + " to " + path_);
  }
  crash_point("snapshot renamed");
  done_ = true;
  std::string dir = std::filesystem::path(path_).parent_path().string();
  RAWDAX_RETURN_IF_ERROR(fsync_directory(dir.empty() ? "." : dir));
  return header_;
}

Result<SnapshotFile> SnapshotFile::open(const std::string& path) {
  SnapshotFile f;
  f.path_ = path;
  auto corrupt = [&](const std::string& why) {
    return Error(std::errc::illegal_byte_sequence, "snapshot " + path + ": " + why);
  };
  f.fd_.reset(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!f.fd_.valid()) return errno_error(errno, "cannot open snapshot " + path);
  std::string text(kHeaderBytes, '\0');
  RAWDAX_RETURN_IF_ERROR(pread_all(f.fd_.get(), text.data(), text.size(), 0, path));
  if (text.compare(0, std::strlen(kMagic), kMagic) != 0) return corrupt("not a rawdax snapshot");
  text = text.substr(std::strlen(kMagic), text.find('\0') - std::strlen(kMagic));
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return corrupt("header is not JSON");
  SnapshotHeader& h = f.header_;
  try {
    h.version = j.at("version").get<uint64_t>();
    h.id = j.at("id").get<std::string>();
    h.source_uuid = j.at("source_uuid").get<std::string>();
    h.namespace_size = j.at("namespace_size").get<uint64_t>();
    h.page_size = j.at("page_size").get<uint64_t>();
    h.base_id = j.at("base_id").get<std::string>();
    h.base_checksum = j.at("base_checksum").get<std::string>();
    h.base_path = j.at("base_path").get<std::string>();
    h.stored_pages = j.at("stored_pages").get<uint64_t>();
    h.bitmap_checksum = j.at("bitmap_checksum").get<std::string>();
    h.table_checksum = j.at("table_checksum").get<std::string>();
    h.header_checksum = j.at("header_checksum").get<std::string>();
    // Optional: files from before exportable snapshots lack them.
    h.namespace_name = j.value("namespace", std::string());
    h.taken_at = j.value("taken_at", std::string());
  } catch (const nlohmann::json::exception&) {
    return corrupt("header misses a field or has a wrong type");
  }
  if (h.version != kVersion) return corrupt("unsupported version " + std::to_string(h.version));
  if (checksum_of_json(h) != h.header_checksum && !kFuzzing) {
    return corrupt("header checksum mismatch");
  }
  // Bounded so that no offset computed from them can overflow.
  if (h.page_size < 512 || h.page_size > (uint64_t{1} << 30) ||
      (h.page_size & (h.page_size - 1)) != 0 || h.namespace_size == 0 ||
      h.namespace_size > (uint64_t{1} << 56)) {
    return corrupt("bad geometry: namespace_size " + std::to_string(h.namespace_size) +
                   ", page_size " + std::to_string(h.page_size));
  }
  struct stat st;
  if (::fstat(f.fd_.get(), &st) != 0) return errno_error(errno, "fstat " + path);
  if (static_cast<uint64_t>(st.st_size) < h.file_size()) {
    return corrupt("truncated: " + std::to_string(st.st_size) + " bytes, expected " +
                   std::to_string(h.file_size()));
  }
  f.bitmap_.resize(h.bitmap_bytes());
  RAWDAX_RETURN_IF_ERROR(
      pread_all(f.fd_.get(), f.bitmap_.data(), f.bitmap_.size(), h.bitmap_offset(), path));
  if (hex64(hash(f.bitmap_.data(), f.bitmap_.size(), 0)) != h.bitmap_checksum && !kFuzzing) {
    return corrupt("page bitmap checksum mismatch");
  }
  f.checksums_.resize(h.page_count());
  RAWDAX_RETURN_IF_ERROR(pread_all(f.fd_.get(), f.checksums_.data(),
                                   f.checksums_.size() * sizeof(uint64_t), h.table_offset(),
                                   path));
  if (hex64(hash(f.checksums_.data(), f.checksums_.size() * sizeof(uint64_t), 0)) !=
          h.table_checksum &&
      !kFuzzing) {
    return corrupt("page checksum table mismatch");
  }
  return f;
}

Status SnapshotFile::read_page(uint64_t page, std::span<std::byte> out) const {
  if (page >= header_.page_count() || out.size() != header_.page_bytes(page)) {
    return Error(std::errc::invalid_argument,
                 "snapshot " + path_ + ": read of page " + std::to_string(page) + " into " +
                     std::to_string(out.size()) + " bytes");
  }
  RAWDAX_RETURN_IF_ERROR(pread_all(fd_.get(), out.data(), out.size(),
                                   header_.data_offset() + page * header_.page_size, path_));
  // page_checksum(), not a hash of `out`: a short last page was checksummed
  // zero-padded when it was written.
  if (page_checksum(out, page, header_.page_size) != checksums_[page]) {
    return Error(std::errc::illegal_byte_sequence,
                 "snapshot " + path_ + ": page " + std::to_string(page) + " (offset " +
                     std::to_string(page * header_.page_size) + ") fails its checksum");
  }
  return ok();
}

Status SnapshotFile::verify_pages() const {
  std::vector<std::byte> buf(header_.page_size);
  for (uint64_t page = 0; page < header_.page_count(); ++page) {
    if (!has_page(page)) continue;
    RAWDAX_RETURN_IF_ERROR(
        read_page(page, std::span<std::byte>(buf.data(), header_.page_bytes(page))));
  }
  return ok();
}

std::string SnapshotFile::resolved_base_path() const {
  std::filesystem::path base(header_.base_path);
  if (base.is_absolute()) return base.string();
  return (std::filesystem::path(path_).parent_path() / base).string();
}

SnapshotInfo SnapshotFile::info() const { return snapshot_info_of(path_, header_); }

SnapshotInfo snapshot_info_of(const std::string& path, const SnapshotHeader& h) {
  SnapshotInfo i;
  i.path = path;
  i.id = h.id;
  i.base_id = h.base_id;
  i.base_path = h.base_path;
  i.source_uuid = h.source_uuid;
  i.namespace_size = h.namespace_size;
  i.page_size = h.page_size;
  i.pages = h.stored_pages;
  i.bytes_written = h.stored_pages * h.page_size;
  return i;
}

SnapshotHeader new_snapshot_header(const std::string& name, const std::string& source_uuid,
                                   uint64_t namespace_size, uint64_t page_size) {
  SnapshotHeader header;
  header.id = new_uuid();
  header.source_uuid = source_uuid;
  header.namespace_size = namespace_size;
  header.page_size = page_size;
  header.namespace_name = name;
  header.taken_at = utc_timestamp_now();
  return header;
}

Result<std::vector<SnapshotFile>> open_chain(const std::string& path) {
  std::vector<SnapshotFile> chain;
  auto file = SnapshotFile::open(path);
  if (!file) return file.error();
  chain.push_back(std::move(*file));
  while (!chain.back().header().base_id.empty()) {
    const SnapshotFile& child = chain.back();
    if (chain.size() > 4096) {
      return Error(std::errc::too_many_links, "snapshot " + path + ": base chain too long");
    }
    std::string base_path = child.resolved_base_path();
    auto base = SnapshotFile::open(base_path);
    if (!base) return base.error().with_context("base of " + child.path() + ": ");
    if (base->header().id != child.header().base_id) {
      return Error(std::errc::invalid_argument,
                   "snapshot " + child.path() + ": base " + base_path + " has id " +
                       base->header().id + ", expected " + child.header().base_id);
    }
    if (base->header().header_checksum != child.header().base_checksum) {
      return Error(std::errc::invalid_argument,
                   "snapshot " + child.path() + ": base " + base_path +
                       " changed after this incremental was made (checksum " +
                       base->header().header_checksum + ", expected " +
                       child.header().base_checksum + ")");
    }
    if (base->header().namespace_size != child.header().namespace_size ||
        base->header().page_size != child.header().page_size) {
      return Error(std::errc::invalid_argument,
                   "snapshot " + child.path() + ": base " + base_path + " has another geometry");
    }
    chain.push_back(std::move(*base));
  }
  return chain;
}

}  // namespace rawdax::internal

namespace rawdax {

Result<std::vector<SnapshotInfo>> verify_snapshot(const std::string& path) {
  auto chain = internal::open_chain(path);
  if (!chain) return chain.error();
  std::vector<SnapshotInfo> infos;
  for (const auto& file : *chain) {
    RAWDAX_RETURN_IF_ERROR(file.verify_pages());
    infos.push_back(file.info());
  }
  return infos;
}

}  // namespace rawdax
