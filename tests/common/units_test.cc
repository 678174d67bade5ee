#include "common/units.h"

#include <gtest/gtest.h>

namespace rawdax {
namespace {

TEST(ParseSize, AcceptsSuffixes) {
  EXPECT_EQ(*internal::parse_size("4096"), 4096u);
  EXPECT_EQ(*internal::parse_size("4K"), 4096u);
  EXPECT_EQ(*internal::parse_size("256M"), 256ull << 20);
  EXPECT_EQ(*internal::parse_size("1g"), 1ull << 30);
  EXPECT_EQ(*internal::parse_size("2GiB"), 2ull << 30);
  EXPECT_EQ(*internal::parse_size("1T"), 1ull << 40);
  EXPECT_EQ(*internal::parse_size("0"), 0u);
}

TEST(ParseSize, RejectsGarbage) {
  for (const char* bad : {"", "12Q", "-5", "+5", "1.5G", "G", "5 M", "99999999999999999999",
                          "20000000000T", "1MX"}) {
    auto r = internal::parse_size(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code(), std::errc::invalid_argument) << bad;
    EXPECT_NE(r.error().message().find("invalid size"), std::string::npos);
  }
}

TEST(RoundUp, DetectsOverflow) {
  EXPECT_EQ(*internal::round_up(1, 4096), 4096u);
  EXPECT_EQ(*internal::round_up(4096, 4096), 4096u);
  EXPECT_FALSE(internal::round_up(UINT64_MAX - 10, 4096).has_value());
}

TEST(RangeFits, HandlesOverflow) {
  EXPECT_TRUE(internal::range_fits(0, 10, 10));
  EXPECT_FALSE(internal::range_fits(1, 10, 10));
  EXPECT_FALSE(internal::range_fits(11, 0, 10));
  EXPECT_FALSE(internal::range_fits(5, UINT64_MAX, 10));
}

TEST(FormatSize, Human) {
  EXPECT_EQ(internal::format_size(512), "512 B");
  EXPECT_EQ(internal::format_size(256ull << 20), "256.00 MiB");
}

}  // namespace
}  // namespace rawdax
