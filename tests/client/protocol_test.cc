// The wire pieces: line framing with a bound, and fds queued in the order
// their lines were sent.
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <string>

#include "client/protocol.h"

namespace rawdax::control {
namespace {

struct SocketPair {
  SocketPair() {
    int fds[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    a.reset(fds[0]);
    b.reset(fds[1]);
  }
  internal::UniqueFd a, b;
};

TEST(ControlProtocolTest, LinesSplitAcrossAndWithinReads) {
  SocketPair s;
  std::string burst = "one\ntwo\nthr";
  ASSERT_EQ(::write(s.a.get(), burst.data(), burst.size()), static_cast<ssize_t>(burst.size()));
  LineReader reader(64);
  EXPECT_EQ(*reader.read_line(s.b.get()), "one");
  EXPECT_TRUE(reader.has_line());
  EXPECT_EQ(*reader.read_line(s.b.get()), "two");
  EXPECT_FALSE(reader.has_line());
  ASSERT_TRUE(send_line(s.a.get(), "ee"));
  EXPECT_EQ(*reader.read_line(s.b.get()), "three");
  s.a.reset();
  auto eof = reader.read_line(s.b.get());
  ASSERT_FALSE(eof);
  EXPECT_EQ(eof.error().code(), std::errc::connection_reset);
}

TEST(ControlProtocolTest, OverlongLinesAreRefusedFinishedOrNot) {
  const size_t bound = 1000;
  for (size_t extra : {1, 5000}) {
    SocketPair s;
    LineReader reader(bound);
    // A complete line just over the bound, and an unfinished one far over it.
    std::string line(bound + extra, 'x');
    if (extra == 1) line += "\n";
    ASSERT_EQ(::write(s.a.get(), line.data(), line.size()), static_cast<ssize_t>(line.size()));
    auto got = reader.read_line(s.b.get());
    ASSERT_FALSE(got) << "accepted a line of " << line.size() << " bytes";
    EXPECT_EQ(got.error().code(), std::errc::message_size);
  }
  SocketPair s;
  LineReader reader(bound);
  ASSERT_TRUE(send_line(s.a.get(), std::string(bound, 'y')));
  auto exact = reader.read_line(s.b.get());
  ASSERT_TRUE(exact);
  EXPECT_EQ(exact->size(), bound);
}

TEST(ControlProtocolTest, PassedFdsQueueInLineOrder) {
  SocketPair s;
  int first[2], second[2];
  ASSERT_EQ(::pipe2(first, O_CLOEXEC), 0);
  ASSERT_EQ(::pipe2(second, O_CLOEXEC), 0);
  internal::UniqueFd keep[] = {internal::UniqueFd(first[0]), internal::UniqueFd(first[1]), internal::UniqueFd(second[0]),
                     internal::UniqueFd(second[1])};
  ASSERT_TRUE(send_line(s.a.get(), "plain"));
  ASSERT_TRUE(send_line(s.a.get(), "with first", first[1]));
  ASSERT_TRUE(send_line(s.a.get(), "with second", second[1]));
  LineReader reader(1 << 10);
  EXPECT_EQ(*reader.read_line(s.b.get()), "plain");
  EXPECT_EQ(*reader.read_line(s.b.get()), "with first");
  EXPECT_EQ(*reader.read_line(s.b.get()), "with second");
  ASSERT_EQ(reader.fds().size(), 2u);
  // Each received fd is the write end of its pipe: a byte written through it
  // comes out of that pipe's read end.
  ASSERT_EQ(::write(reader.fds()[0].get(), "1", 1), 1);
  ASSERT_EQ(::write(reader.fds()[1].get(), "2", 1), 1);
  char c = 0;
  ASSERT_EQ(::read(first[0], &c, 1), 1);
  EXPECT_EQ(c, '1');
  ASSERT_EQ(::read(second[0], &c, 1), 1);
  EXPECT_EQ(c, '2');
}

TEST(ControlProtocolTest, ErrorClassesRoundTrip) {
  for (auto code : {std::errc::no_such_file_or_directory, std::errc::device_or_resource_busy,
                    std::errc::function_not_supported, std::errc::invalid_argument}) {
    Error e(code, "x");
    EXPECT_EQ(error_code_for_class(error_class(e)), std::make_error_code(code));
  }
  EXPECT_EQ(error_class(Error(std::errc::timed_out, "x")), kGenericError);
}

}  // namespace
}  // namespace rawdax::control
