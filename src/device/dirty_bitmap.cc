#include "device/dirty_bitmap.h"

#include <bit>

namespace rawdax::internal {

DirtyBitmap::DirtyBitmap() : chunks_(new std::atomic<Chunk*>[kChunks]) {
  for (uint64_t i = 0; i < kChunks; ++i) chunks_[i].store(nullptr, std::memory_order_relaxed);
}

DirtyBitmap::~DirtyBitmap() {
  for (uint64_t i = 0; i < kChunks; ++i) delete chunks_[i].load(std::memory_order_relaxed);
}

DirtyBitmap::Chunk* DirtyBitmap::chunk_for_write(uint64_t index) {
  Chunk* chunk = chunks_[index].load(std::memory_order_acquire);
  if (chunk != nullptr) return chunk;
  auto* fresh = new Chunk();
  for (auto& w : fresh->words) w.store(0, std::memory_order_relaxed);
  // Release publishes the zeroed words; a losing racer frees its copy.
  if (chunks_[index].compare_exchange_strong(chunk, fresh, std::memory_order_acq_rel)) {
    return fresh;
  }
  delete fresh;
  return chunk;
}

void DirtyBitmap::reserve(uint64_t first_page, uint64_t count) {
  const uint64_t end = std::min(first_page + count, kMaxPages);
  for (uint64_t page = first_page; page < end; page += kChunkPages - (page & (kChunkPages - 1))) {
    chunk_for_write(page >> kChunkShift);
  }
}

void DirtyBitmap::set_range(uint64_t first_page, uint64_t count) {
  uint64_t end = first_page + count;
  if (end > kMaxPages) end = kMaxPages;
  for (uint64_t page = first_page; page < end;) {
    Chunk* chunk = chunk_for_write(page >> kChunkShift);
    uint64_t in_chunk = page & (kChunkPages - 1);
    uint64_t word = in_chunk / 64, bit = in_chunk % 64;
    uint64_t n = std::min<uint64_t>(64 - bit, end - page);
    uint64_t mask = (n == 64 ? ~uint64_t{0} : ((uint64_t{1} << n) - 1)) << bit;
    if ((chunk->words[word].load(std::memory_order_relaxed) & mask) != mask) {
      chunk->words[word].fetch_or(mask, std::memory_order_acq_rel);
    }
    page += n;
  }
}

void DirtyBitmap::clear_range(uint64_t first_page, uint64_t count) {
  const uint64_t end = std::min(first_page + count, kMaxPages);
  for (uint64_t page = first_page; page < end;) {
    uint64_t in_chunk = page & (kChunkPages - 1);
    uint64_t word = in_chunk / 64, bit = in_chunk % 64;
    uint64_t n = std::min<uint64_t>(64 - bit, end - page);
    if (Chunk* chunk = chunks_[page >> kChunkShift].load(std::memory_order_acquire)) {
      uint64_t mask = (n == 64 ? ~uint64_t{0} : ((uint64_t{1} << n) - 1)) << bit;
      chunk->words[word].fetch_and(~mask, std::memory_order_acq_rel);
    }
    page += n;
  }
}

bool DirtyBitmap::test(uint64_t page) const {
  if (page >= kMaxPages) return false;
  Chunk* chunk = chunks_[page >> kChunkShift].load(std::memory_order_acquire);
  if (chunk == nullptr) return false;
  uint64_t in_chunk = page & (kChunkPages - 1);
  return (chunk->words[in_chunk / 64].load(std::memory_order_acquire) >> (in_chunk % 64)) & 1;
}

// Calls op(base_page, word_atomic) for every word of every allocated chunk.
template <typename WordOp>
void DirtyBitmap::scan(WordOp&& op) const {
  for (uint64_t c = 0; c < kChunks; ++c) {
    Chunk* chunk = chunks_[c].load(std::memory_order_acquire);
    if (chunk == nullptr) continue;
    for (uint64_t w = 0; w < kWordsPerChunk; ++w) op((c << kChunkShift) + w * 64, chunk->words[w]);
  }
}

uint64_t DirtyBitmap::count() const {
  uint64_t n = 0;
  scan([&](uint64_t, const std::atomic<uint64_t>& word) {
    n += static_cast<uint64_t>(std::popcount(word.load(std::memory_order_relaxed)));
  });
  return n;
}

namespace {

// Feeds the set bits of `bits` (page base `base`) into a run accumulator.
struct RunBuilder {
  const std::function<void(uint64_t, uint64_t)>& fn;
  uint64_t start = 0, length = 0;
  void add(uint64_t base, uint64_t bits) {
    while (bits != 0) {
      unsigned bit = static_cast<unsigned>(std::countr_zero(bits));
      uint64_t page = base + bit;
      if (length > 0 && start + length == page) {
        ++length;
      } else {
        flush();
        start = page;
        length = 1;
      }
      bits &= bits - 1;
    }
  }
  void flush() {
    if (length > 0) fn(start, length);
    length = 0;
  }
};

}  // namespace

void DirtyBitmap::for_each_run(const std::function<void(uint64_t, uint64_t)>& fn) const {
  RunBuilder runs{fn};
  scan([&](uint64_t base, const std::atomic<uint64_t>& word) {
    uint64_t bits = word.load(std::memory_order_acquire);
    if (bits != 0) runs.add(base, bits);
  });
  runs.flush();
}

uint64_t DirtyBitmap::take(const std::function<void(uint64_t, uint64_t)>& fn) {
  RunBuilder runs{fn};
  uint64_t taken = 0;
  scan([&](uint64_t base, const std::atomic<uint64_t>& word) {
    if (word.load(std::memory_order_relaxed) == 0) return;
    uint64_t bits = const_cast<std::atomic<uint64_t>&>(word).exchange(0, std::memory_order_acq_rel);
    taken += static_cast<uint64_t>(std::popcount(bits));
    runs.add(base, bits);
  });
  runs.flush();
  return taken;
}

}  // namespace rawdax::internal
