// DirtyBitmap: one bit per page of a namespace, set by whoever writes the
// page (block writes, write faults) and taken by sync().
//
// Storage is a fixed table of lazily allocated chunks, so the bitmap can grow
// with the namespace while other threads set bits: chunks are published with
// a release CAS and never move or shrink until destruction.
//
// Thread safety: set(), set_range() and take() may race freely; each bit
// operation is one atomic RMW on its word. take() clears what it returns in
// the same RMW, so a bit set concurrently is either returned now or left for
// the next take(), never lost.
#ifndef RAWDAX_DEVICE_DIRTY_BITMAP_H_
#define RAWDAX_DEVICE_DIRTY_BITMAP_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>

namespace rawdax::internal {

class DirtyBitmap {
 public:
  DirtyBitmap();
  ~DirtyBitmap();
  DirtyBitmap(const DirtyBitmap&) = delete;
  DirtyBitmap& operator=(const DirtyBitmap&) = delete;

  // Pages beyond the capacity (2^31 pages: 8 TiB of 4K pages) are ignored.
  static constexpr uint64_t kMaxPages = uint64_t{1} << 31;

  void set(uint64_t page) { set_range(page, 1); }
  void set_range(uint64_t first_page, uint64_t count);
  // Allocates the storage of pages [first_page, +count) now, so that setting
  // them later allocates nothing (a SIGBUS handler may set them).
  void reserve(uint64_t first_page, uint64_t count);
  // Clears pages [first_page, +count).
  void clear_range(uint64_t first_page, uint64_t count);
  bool test(uint64_t page) const;
  uint64_t count() const;

  // Calls fn(first_page, count) for each run of set bits, ascending, without
  // clearing them.
  void for_each_run(const std::function<void(uint64_t, uint64_t)>& fn) const;
  // Clears every set bit and calls fn(first_page, count) for each run of them.
  // Returns the number of pages taken.
  uint64_t take(const std::function<void(uint64_t, uint64_t)>& fn);

 private:
  static constexpr unsigned kChunkShift = 18;  // pages per chunk: 256 Ki (1 GiB of 4K pages)
  static constexpr uint64_t kChunkPages = uint64_t{1} << kChunkShift;
  static constexpr uint64_t kWordsPerChunk = kChunkPages / 64;
  static constexpr uint64_t kChunks = kMaxPages >> kChunkShift;

  struct Chunk {
    std::atomic<uint64_t> words[kWordsPerChunk];
  };
  Chunk* chunk_for_write(uint64_t index);
  template <typename WordOp>
  void scan(WordOp&& op) const;

  std::unique_ptr<std::atomic<Chunk*>[]> chunks_;
};

}  // namespace rawdax::internal

#endif  // RAWDAX_DEVICE_DIRTY_BITMAP_H_
