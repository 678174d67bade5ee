// Every command's arguments checked against its declared schema: the exact
// error text of an unknown, missing, mistyped, out-of-range or empty
// argument, and which one is reported when several are wrong. Drives a
// Dispatcher directly over a memfd region (as a verb run in-process does).
#include <unistd.h>

#include <gtest/gtest.h>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "daemon/dispatcher.h"
#include "rawdax/rawdax.h"

namespace rawdax {
namespace {

using json = nlohmann::json;

class ControlArgumentsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto region = Region::open("memfd:", {.create = true});
    ASSERT_TRUE(region) << region.error().message();
    region_ = std::move(*region);
    auto made = region_->create_namespace({.name = "vm1", .size = 1 << 20});
    ASSERT_TRUE(made) << made.error().message();
    dispatcher_ = std::make_unique<control::Dispatcher>(
        *region_, control::DispatcherOptions{.log = nullptr, .open_every_namespace = false});
    session_.peer = std::make_shared<control::Peer>(0, internal::UniqueFd(), ::getpid(), ::getuid());
  }
  void TearDown() override {
    if (dispatcher_) dispatcher_->end_session(session_);
  }

  json execute(const std::string& command, const json& arguments) {
    auto reply = dispatcher_->handle(
        session_, json{{"execute", command}, {"arguments", arguments}}.dump());
    return json::parse(reply.line, nullptr, false);
  }

  std::unique_ptr<Region> region_;
  std::unique_ptr<control::Dispatcher> dispatcher_;
  control::Session session_;
};

struct Case {
  std::string command;
  json arguments;
  std::string desc;
};

TEST_F(ControlArgumentsTest, EachBadArgumentIsOneGenericErrorNamingIt) {
  const std::vector<Case> cases = {
      // Unknown names come first (the first in name order), then each
      // declared argument in the schema's order, then emptiness.
      {"query-namespaces", {{"x", 1}},
       "query-namespaces: argument 'x' is not an argument of this command"},
      {"create-namespace", {{"bogus", 1}},
       "create-namespace: argument 'bogus' is not an argument of this command"},
      {"create-namespace", {{"name", "x"}, {"size", 1}, {"zzz", 1}, {"aaa", 2}},
       "create-namespace: argument 'aaa' is not an argument of this command"},
      {"create-namespace", json::object(), "create-namespace: argument 'name' is missing"},
      {"create-namespace", {{"name", "x"}}, "create-namespace: argument 'size' is missing"},
      {"create-namespace", {{"name", 1}, {"size", "a"}},
       "create-namespace: argument 'name' must be a string"},
      {"create-namespace", {{"name", "x"}, {"size", -1}},
       "create-namespace: argument 'size' must be a non-negative integer"},
      {"create-namespace", {{"name", "x"}, {"size", 1.5}},
       "create-namespace: argument 'size' must be a non-negative integer"},
      {"create-namespace", {{"name", "x"}, {"size", "1"}},
       "create-namespace: argument 'size' must be a non-negative integer"},
      {"destroy-namespace", {{"name", "vm1"}, {"force", "yes"}},
       "destroy-namespace: argument 'force' must be true or false"},
      {"resize-namespace", {{"name", "vm1"}, {"size", 1}, {"force", 0}},
       "resize-namespace: argument 'force' must be true or false"},
      {"resize-namespace", {{"name", "vm1"}, {"force", true}},
       "resize-namespace: argument 'size' is missing"},
      {"open-namespace", {{"name", "vm1"}, {"access", "rx"}},
       "open-namespace: argument 'access' must be \"rw\" or \"ro\""},
      {"open-namespace", {{"name", "vm1"}, {"access", ""}},
       "open-namespace: argument 'access' must be \"rw\" or \"ro\""},
      {"open-namespace", {{"name", "vm1"}, {"access", 1}},
       "open-namespace: argument 'access' must be a string"},
      {"open-namespace", {{"name", "vm1"}, {"access", "rx"}, {"exclusive", 1}},
       "open-namespace: argument 'access' must be \"rw\" or \"ro\""},
      {"open-namespace", {{"name", "vm1"}, {"exclusive", "no"}},
       "open-namespace: argument 'exclusive' must be true or false"},
      {"release-namespace", {{"name", nullptr}},
       "release-namespace: argument 'name' must be a string"},
      {"freeze", {{"name", "vm1"}, {"timeout", "1"}},
       "freeze: argument 'timeout' must be a number of seconds"},
      {"freeze", {{"name", "vm1"}, {"timeout", -1}},
       "freeze: argument 'timeout' must be between 0 and 3600"},
      {"freeze", {{"name", "vm1"}, {"timeout", 3600.5}},
       "freeze: argument 'timeout' must be between 0 and 3600"},
      {"freeze", {{"name", "vm1"}, {"timeout", "x"}, {"force", 1}},
       "freeze: argument 'timeout' must be a number of seconds"},
      {"freeze", {{"name", "vm1"}, {"timeout", 1}, {"force", 1}},
       "freeze: argument 'force' must be true or false"},
      {"freeze", {{"timeout", 1}}, "freeze: argument 'name' is missing"},
      {"freeze-ack", {{"name", "vm1"}}, "freeze-ack: argument 'token' is missing"},
      {"freeze-ack", {{"name", "vm1"}, {"token", -3}},
       "freeze-ack: argument 'token' must be a non-negative integer"},
      {"thaw", json::object(), "thaw: argument 'name' is missing"},
      {"snapshot", {{"name", "vm1"}}, "snapshot: argument 'file' is missing"},
      {"snapshot", {{"name", "vm1"}, {"file", ""}}, "snapshot: argument 'file' is empty"},
      {"snapshot", {{"name", "vm1"}, {"file", ""}, {"threads", 65}},
       "snapshot: argument 'threads' must be an integer from 0 to 64"},
      {"snapshot", {{"name", "vm1"}, {"file", ""}, {"base", 1}},
       "snapshot: argument 'base' must be a string"},
      {"snapshot", {{"name", "vm1"}, {"file", "f"}, {"threads", -1}},
       "snapshot: argument 'threads' must be an integer from 0 to 64"},
      {"snapshot", {{"name", "vm1"}, {"file", "f"}, {"timeout", 4000}, {"threads", -1}},
       "snapshot: argument 'timeout' must be between 0 and 3600"},
      {"snapshot", {{"name", "vm1"}, {"file", 2}, {"timeout", 4000}},
       "snapshot: argument 'file' must be a string"},
      {"attach-vm", {{"name", "vm1"}}, "attach-vm: argument 'qmp' is missing"},
      {"detach-vm", {{"name", json::array()}}, "detach-vm: argument 'name' must be a string"},
      {"restore-namespace", {{"name", "vm1"}, {"file", ""}},
       "restore-namespace: argument 'file' is empty"},
      {"restore-namespace", {{"name", "vm1"}, {"file", ""}, {"force", "x"}},
       "restore-namespace: argument 'force' must be true or false"},
      {"verify-snapshot", json::object(), "verify-snapshot: argument 'file' is missing"},
      {"export-snapshot", json::object(), "export-snapshot: argument 'file' is missing"},
      {"export-snapshot", {{"file", ""}}, "export-snapshot: argument 'file' is empty"},
      {"export-snapshot", {{"file", "f"}, {"export", 3}},
       "export-snapshot: argument 'export' must be a string"},
      {"unexport", json::object(), "unexport: argument 'export' is missing"},
      {"query-exports", {{"all", true}}, "query-exports: argument 'all' is not an argument of this command"},
      {"vm-args", {{"name", "vm1"}}, "vm-args: argument 'ram' is missing"},
      {"vm-args", {{"name", "vm1"}, {"virtio", 1}, {"ram", 1}},
       "vm-args: argument 'virtio' must be true or false"},
      {"vm-args", {{"name", "vm1"}, {"ram", 1}, {"qemu", 5}},
       "vm-args: argument 'qemu' must be a string"},
  };
  for (const Case& c : cases) {
    json r = execute(c.command, c.arguments);
    ASSERT_TRUE(r.is_object()) << c.command;
    EXPECT_EQ(r.value("/error/class"_json_pointer, ""), "GenericError")
        << c.command << " " << c.arguments << ": " << r;
    EXPECT_EQ(r.value("/error/desc"_json_pointer, ""), c.desc)
        << c.command << " " << c.arguments << ": " << r;
  }
  // Nothing was created or frozen by a refused request.
  EXPECT_FALSE(region_->find("x"));
  EXPECT_TRUE(execute("thaw", {{"name", "vm1"}})["error"]["desc"].get<std::string>().find(
                  "is not frozen") != std::string::npos);
}

TEST_F(ControlArgumentsTest, DefaultsAndGivenValuesReachTheCommand) {
  // access defaults to "rw", exclusive to false.
  json r = execute("open-namespace", {{"name", "vm1"}});
  ASSERT_TRUE(r.contains("return")) << r;
  EXPECT_EQ(r["return"]["access"], "rw");
  EXPECT_EQ(r["return"]["exclusive"], false);
  r = execute("release-namespace", {{"name", "vm1"}});
  ASSERT_TRUE(r.contains("return")) << r;
  r = execute("open-namespace", {{"name", "vm1"}, {"access", "ro"}, {"exclusive", true}});
  ASSERT_TRUE(r.contains("return")) << r;
  EXPECT_EQ(r["return"]["access"], "ro");
  EXPECT_EQ(r["return"]["exclusive"], true);
  // Bounds are inclusive: 0 and 3600 seconds are accepted.
  for (double timeout : {0.0, 3600.0, 0.25}) {
    r = execute("freeze", {{"name", "vm1"}, {"timeout", timeout}});
    ASSERT_TRUE(r.contains("return")) << timeout << ": " << r;
    EXPECT_EQ(r["return"]["revoked"], json::array());
    r = execute("thaw", {{"name", "vm1"}});
    ASSERT_TRUE(r.contains("return")) << r;
  }
  r = execute("create-namespace", {{"name", "second"}, {"size", 1 << 20}});
  ASSERT_TRUE(r.contains("return")) << r;
  EXPECT_EQ(r["return"]["size"], 1 << 20);
  // An unknown command is CommandNotFound whatever its arguments.
  r = execute("no-such-command", {{"x", 1}});
  EXPECT_EQ(r.value("/error/class"_json_pointer, ""), "CommandNotFound") << r;
}

}  // namespace
}  // namespace rawdax
