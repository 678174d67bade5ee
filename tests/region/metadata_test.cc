#include "region/metadata.h"

#include <gtest/gtest.h>

#include "common/uuid.h"

namespace rawdax {
namespace {

internal::RegionMetadata sample() {
  internal::RegionMetadata meta;
  meta.generation = 7;
  meta.region_uuid = internal::new_uuid();
  meta.namespaces.push_back({"vm1", internal::new_uuid(), 1 << 20, "raw", "", 0});
  meta.namespaces.push_back({"vm2", internal::new_uuid(), 2 << 20, "raw", "", 0});
  return meta;
}

TEST(Metadata, RoundTrips) {
  internal::RegionMetadata meta = sample();
  auto back = internal::decode_metadata(internal::encode_metadata(meta), "test");
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_EQ(back->generation, 7u);
  EXPECT_EQ(back->region_uuid, meta.region_uuid);
  ASSERT_EQ(back->namespaces.size(), 2u);
  EXPECT_EQ(back->namespaces[1].name, "vm2");
  EXPECT_EQ(back->namespaces[1].uuid, meta.namespaces[1].uuid);
  EXPECT_EQ(back->namespaces[1].size, 2u << 20);
}

TEST(Metadata, BadBlocksRoundTripAndARecordWithoutThemIsWhatOlderVersionsWrote) {
  internal::RegionMetadata meta = sample();
  EXPECT_EQ(internal::encode_metadata(meta).find("badblocks"), std::string::npos);
  meta.namespaces[0].badblocks = {{4096, 4096}, {65536, 8192}};
  auto back = internal::decode_metadata(internal::encode_metadata(meta), "test");
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_EQ(back->namespaces[0].badblocks, meta.namespaces[0].badblocks);
  EXPECT_TRUE(back->namespaces[1].badblocks.empty());
}

TEST(Metadata, ARestoreMarkerRoundTripsAndOnlyAMarkedNamespaceCarriesOne) {
  internal::RegionMetadata meta = sample();
  EXPECT_EQ(internal::encode_metadata(meta).find("restore"), std::string::npos);
  meta.namespaces[1].restore = RestoreState{.snapshot = "/snaps/a.snap", .checksum = "00ff"};
  auto back = internal::decode_metadata(internal::encode_metadata(meta), "test");
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_FALSE(back->namespaces[0].restore.has_value());
  ASSERT_TRUE(back->namespaces[1].restore.has_value());
  EXPECT_EQ(back->namespaces[1].restore->snapshot, "/snaps/a.snap");
  EXPECT_EQ(back->namespaces[1].restore->checksum, "00ff");
  // A marker without its snapshot is corrupt.
  meta.namespaces[1].restore->snapshot = "";
  auto bad = internal::decode_metadata(internal::encode_metadata(meta), "test");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message().find("restore state of namespace vm2"), std::string::npos)
      << bad.error().message();
}

TEST(Metadata, BadBlocksOutOfOrderOrPastTheSizeAreRejected) {
  for (std::vector<BadRange> bad : {std::vector<BadRange>{{8192, 4096}, {0, 4096}},
                                    std::vector<BadRange>{{0, 8192}, {4096, 4096}},
                                    std::vector<BadRange>{{4096, 0}},
                                    std::vector<BadRange>{{(1 << 20) - 4096, 8192}}}) {
    internal::RegionMetadata meta = sample();
    meta.namespaces[0].badblocks = bad;
    auto back = internal::decode_metadata(internal::encode_metadata(meta), "meta");
    ASSERT_FALSE(back);
    EXPECT_NE(back.error().message().find("bad blocks of namespace vm1"), std::string::npos)
        << back.error().message();
  }
}

TEST(Metadata, EveryFlippedByteIsDetected) {
  std::string bytes = internal::encode_metadata(sample());
  for (size_t i = 0; i < bytes.size(); ++i) {
    std::string bad = bytes;
    bad[i] = static_cast<char>(bad[i] ^ 0x20);
    auto r = internal::decode_metadata(bad, "meta");
    EXPECT_FALSE(r) << "flip at " << i << " went unnoticed";
    if (!r) {
      EXPECT_NE(r.error().message().find("corrupt region metadata meta"), std::string::npos);
    }
  }
}

TEST(Metadata, TruncationIsDetected) {
  std::string bytes = internal::encode_metadata(sample());
  for (size_t len : {size_t{0}, size_t{5}, bytes.size() / 2, bytes.size() - 1}) {
    EXPECT_FALSE(internal::decode_metadata(bytes.substr(0, len), "meta")) << len;
  }
}

// A filesystem without write(2) (hugetlbfs) holds the record in whole huge
// pages: NULs may follow it, nothing else may.
TEST(Metadata, OnlyNulPaddingMayFollowTheRecord) {
  std::string bytes = internal::encode_metadata(sample());
  std::string padded = bytes + std::string((size_t{2} << 20) - bytes.size(), '\0');
  auto back = internal::decode_metadata(padded, "meta");
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_EQ(back->namespaces.size(), 2u);
  for (char c : {'x', ' ', '\n'}) {
    std::string bad = padded;
    bad[bytes.size() + 100] = c;
    auto r = internal::decode_metadata(bad, "meta");
    ASSERT_FALSE(r) << "byte " << int(c) << " after the record went unnoticed";
    EXPECT_NE(r.error().message().find("but header says"), std::string::npos)
        << r.error().message();
  }
  // Padding does not hide a short record.
  EXPECT_FALSE(internal::decode_metadata(bytes.substr(0, bytes.size() - 1) + std::string(100, '\0'), "meta"));
}

TEST(Metadata, RejectsDuplicateNamesEvenWithAValidChecksum) {
  internal::RegionMetadata meta = sample();
  meta.namespaces[1].name = "vm1";
  auto r = internal::decode_metadata(internal::encode_metadata(meta), "meta");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("duplicate"), std::string::npos);
}

}  // namespace
}  // namespace rawdax
