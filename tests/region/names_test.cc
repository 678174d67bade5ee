#include "region/names.h"

#include <gtest/gtest.h>

namespace rawdax {
namespace {

TEST(NamespaceName, AcceptsTheCharset) {
  for (const std::string& good : {std::string("a"), std::string("vm1"), std::string("A.b_c-9"),
                                  std::string("...x"), std::string(63, 'n')}) {
    EXPECT_TRUE(internal::validate_namespace_name(good)) << good;
  }
}

TEST(NamespaceName, RejectsWithReason) {
  struct Case {
    std::string name;
    std::string why;
  } cases[] = {{"", "empty"},
               {std::string(64, 'n'), "64 characters"},
               {"a/b", "only"},
               {"..", "reserved"},
               {".", "reserved"},
               {"has space", "only"},
               {"caf\xc3\xa9", "only"},
               {"tab\t", "only"}};
  for (const auto& c : cases) {
    Status st = internal::validate_namespace_name(c.name);
    ASSERT_FALSE(st) << c.name;
    EXPECT_EQ(st.error().code(), std::errc::invalid_argument);
    EXPECT_NE(st.error().message().find(c.why), std::string::npos) << st.error().message();
  }
}

TEST(NamespaceSize, RoundsUpAndRejectsZero) {
  EXPECT_EQ(*internal::validate_namespace_size("a", 1, 4096), 4096u);
  EXPECT_EQ(*internal::validate_namespace_size("a", 8192, 4096), 8192u);
  EXPECT_EQ(*internal::validate_namespace_size("a", 1, 2 << 20), 2u << 20);
  auto zero = internal::validate_namespace_size("vm9", 0, 4096);
  ASSERT_FALSE(zero);
  EXPECT_NE(zero.error().message().find("vm9"), std::string::npos);
  EXPECT_FALSE(internal::validate_namespace_size("a", UINT64_MAX, 4096));
}

}  // namespace
}  // namespace rawdax
