// Example: create a namespace, write through the block face, read it back
// through a mapping, store through the mapping and persist it.
//   rawdax_example REGION_DIR
#include <cstdio>
#include <cstring>
#include <rawdax/rawdax.h>

int main(int argc, char** argv) {
  const char* where = argc > 1 ? argv[1] : "./rawdax-example";
  auto region = rawdax::Region::open(where, {.create = true});
  if (!region) {
    std::fprintf(stderr, "%s\n", region.error().message().c_str());
    return 1;
  }
  if (!(*region)->find("hello")) {
    auto made = (*region)->create_namespace({.name = "hello", .size = 1 << 20});
    if (!made) {
      std::fprintf(stderr, "%s\n", made.error().message().c_str());
      return 1;
    }
  }
  auto dev = (*region)->open_device("hello");
  if (!dev) {
    std::fprintf(stderr, "%s\n", dev.error().message().c_str());
    return 1;
  }
  const char text[] = "written through the block face";
  auto bytes = std::as_bytes(std::span(text));
  if (auto st = (*dev)->write(0, bytes, {.fua = true}); !st) {
    std::fprintf(stderr, "%s\n", st.error().message().c_str());
    return 1;
  }
  auto mapping = (*dev)->map(0, 4096, rawdax::Access::ReadWrite);
  if (!mapping) {
    std::fprintf(stderr, "%s\n", mapping.error().message().c_str());
    return 1;
  }
  std::printf("mapping reads: %s\n", reinterpret_cast<const char*>(mapping->data()));
  std::memcpy(mapping->data() + 100, "stored", 7);
  if (auto st = mapping->persist(mapping->data() + 100, 7); !st) {
    std::fprintf(stderr, "%s\n", st.error().message().c_str());
    return 1;
  }
  char back[7];
  if (auto st = (*dev)->read(100, std::as_writable_bytes(std::span(back))); !st) return 1;
  std::printf("block face reads: %s\n", back);
  return std::strcmp(back, "stored") == 0 ? 0 : 1;
}
