// The reader of QEMU migration streams (vm/migration_stream.h) on streams
// built here byte by byte in QEMU's format: which pages of which block it
// hands on, and what it refuses.
#include "vm/migration_stream.h"

#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "common/unique_fd.h"

namespace rawdax::internal {
namespace {

class Stream {
 public:
  Stream& u8(uint8_t v) {
    bytes_.push_back(v);
    return *this;
  }
  Stream& be32(uint32_t v) {
    for (int s = 24; s >= 0; s -= 8) u8(static_cast<uint8_t>(v >> s));
    return *this;
  }
  Stream& be64(uint64_t v) {
    be32(static_cast<uint32_t>(v >> 32));
    return be32(static_cast<uint32_t>(v));
  }
  Stream& str(const std::string& s) {
    u8(static_cast<uint8_t>(s.size()));
    bytes_.insert(bytes_.end(), s.begin(), s.end());
    return *this;
  }
  Stream& page(char fill) {
    bytes_.insert(bytes_.end(), 4096, static_cast<uint8_t>(fill));
    return *this;
  }
  Stream& header() {
    be32(0x5145564d).be32(3);
    u8(0x07).be32(13);  // configuration: the machine name
    for (char c : std::string("pc-i440fx-7.2")) u8(static_cast<uint8_t>(c));
    return *this;
  }
  // START of the "ram" section (id 2) with its block list.
  Stream& ram_start(const std::vector<std::pair<std::string, uint64_t>>& blocks) {
    u8(0x01).be32(2).str("ram").be32(0).be32(4);
    uint64_t total = 0;
    for (const auto& b : blocks) total += b.second;
    be64(total | 0x04);
    for (const auto& [id, size] : blocks) str(id).be64(size);
    return eos();
  }
  Stream& eos() { return be64(0x10).u8(0x7e).be32(2); }
  Stream& part() { return u8(0x02).be32(2); }
  Stream& end() { return u8(0x03).be32(2); }
  Stream& data(uint64_t offset, const std::string& block, char fill) {
    return be64(offset | 0x08).str(block).page(fill);
  }
  Stream& data_continue(uint64_t offset, char fill) { return be64(offset | 0x08 | 0x20).page(fill); }
  Stream& zero(uint64_t offset, const std::string& block) {
    return be64(offset | 0x02).str(block).u8(0);
  }
  Stream& device_state() {
    u8(0x04).be32(3).str("timer").be32(0).be32(2);
    for (int i = 0; i < 100; ++i) u8(0xab);
    return u8(0x1f);
  }

  // Reads what was built through a socket, as from QEMU.
  Result<RamStreamStats> read(const std::string& block, std::map<uint64_t, char>* pages) const {
    int fds[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    UniqueFd in(fds[0]);
    {
      UniqueFd out(fds[1]);
      EXPECT_EQ(::write(out.get(), bytes_.data(), bytes_.size()),
                static_cast<ssize_t>(bytes_.size()));
    }
    return read_ram_block(in.get(), block, [&](uint64_t offset, std::span<const std::byte> p) {
      EXPECT_EQ(p.size(), 4096u);
      for (std::byte b : p) EXPECT_EQ(b, p[0]);
      (*pages)[offset] = static_cast<char>(p[0]);
      return ok();
    }, std::chrono::milliseconds(2000));
  }

 private:
  std::vector<uint8_t> bytes_;
};

const std::vector<std::pair<std::string, uint64_t>> kBlocks = {{"pc.ram", 8192},
                                                               {"rawdax-ns", 4 * 4096}};

TEST(MigrationStream, HandsOnThePagesOfItsBlockOnly) {
  Stream s;
  s.header().ram_start(kBlocks);
  s.part().data(0, "pc.ram", 'r').data(0, "rawdax-ns", 'a').zero(4096, "rawdax-ns");
  s.data_continue(8192, 'b').data(4096, "pc.ram", 's').eos();
  s.end().data(12288, "rawdax-ns", 'c').eos().device_state();
  std::map<uint64_t, char> pages;
  auto stats = s.read("rawdax-ns", &pages);
  ASSERT_TRUE(stats) << stats.error().message();
  EXPECT_EQ(pages, (std::map<uint64_t, char>{{0, 'a'}, {8192, 'b'}, {12288, 'c'}}));
  EXPECT_EQ(stats->block_size, 4u * 4096);
  EXPECT_EQ(stats->pages, 3u);
  EXPECT_EQ(stats->zero_pages, 1u);
}

TEST(MigrationStream, APageThatNeverCameIsAnError) {
  Stream s;
  s.header().ram_start(kBlocks);
  s.part().data(0, "rawdax-ns", 'a').data_continue(4096, 'b').data_continue(12288, 'd').eos();
  s.end().eos().device_state();
  std::map<uint64_t, char> pages;
  auto stats = s.read("rawdax-ns", &pages);
  ASSERT_FALSE(stats);
  EXPECT_EQ(stats.error().code(), std::errc::io_error) << stats.error().message();
  EXPECT_NE(stats.error().message().find("1 pages"), std::string::npos) << stats.error().message();
}

TEST(MigrationStream, ABlockNotInTheStreamIsENOENT) {
  Stream s;
  s.header().ram_start(kBlocks);
  s.end().data(0, "pc.ram", 'r').data_continue(4096, 's').eos().device_state();
  std::map<uint64_t, char> pages;
  auto stats = s.read("rawdax-other", &pages);
  ASSERT_FALSE(stats);
  EXPECT_EQ(stats.error().code(), std::errc::no_such_file_or_directory);
  EXPECT_TRUE(pages.empty());
}

TEST(MigrationStream, AStreamEndingInsideTheRamIsAProtocolError) {
  Stream s;
  s.header().ram_start(kBlocks);
  s.part().data(0, "rawdax-ns", 'a');
  std::map<uint64_t, char> pages;
  auto stats = s.read("rawdax-ns", &pages);
  ASSERT_FALSE(stats);
  EXPECT_EQ(stats.error().code(), std::errc::protocol_error) << stats.error().message();
}

TEST(MigrationStream, CompressedPagesAndOtherIterableSectionsAreRefused) {
  {
    Stream s;
    s.header().ram_start(kBlocks);
    s.part().be64(0 | 0x40).str("rawdax-ns");  // XBZRLE
    std::map<uint64_t, char> pages;
    auto stats = s.read("rawdax-ns", &pages);
    ASSERT_FALSE(stats);
    EXPECT_EQ(stats.error().code(), std::errc::operation_not_supported);
  }
  {
    Stream s;
    s.header().u8(0x01).be32(1).str("block").be32(0).be32(1);
    std::map<uint64_t, char> pages;
    auto stats = s.read("rawdax-ns", &pages);
    ASSERT_FALSE(stats);
    EXPECT_EQ(stats.error().code(), std::errc::operation_not_supported);
  }
  {
    Stream s;
    s.be32(0x5145564d).be32(2);
    std::map<uint64_t, char> pages;
    auto stats = s.read("rawdax-ns", &pages);
    ASSERT_FALSE(stats);
    EXPECT_EQ(stats.error().code(), std::errc::protocol_error);
  }
}

}  // namespace
}  // namespace rawdax::internal
