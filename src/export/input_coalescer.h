// InputCoalescer: decides whether an NBD session pauses briefly before it
// waits for more requests, so that one wake-up collects a batch.
//
// Why: a pipelining client (fio, qemu at queue depth 32) takes the replies
// to a burst and sends the next requests one by one. A session that blocks
// in recv as soon as its input is drained wakes for the first of them, so
// it answers 2-3 requests per wake-up, and the context switch is the largest
// part of its CPU per request. Pausing kPause before the wait lets the
// client's next requests pile up: one wake-up, one recv and one send then
// serve many of them (docs/export.md has the figures).
//
// The pause costs latency when the client is waiting for our replies, so it
// must pay for itself. The session counts the requests that came in the
// first receive after a wait: all replies had been sent, so they are at most
// the client's queue depth, and the most ever counted estimates it. A pause
// pays when its count is at least kMinBatch and below that estimate: it
// gathered a batch while the client still had requests in flight. When all
// of them came (a client at depth 8 runs dry during the pause) or only a
// few (depth 1 or 2), the pause only delayed the client: pausing is off for
// the next `backoff` waits, doubling (up to kMaxBackoff) while pauses keep
// failing. Such a client thus pays one pause per kMaxBackoff waits once the
// backoff has grown.
//
// Pure policy: the session reports what each wait brought and sleeps when
// told. Not thread-safe: one session thread owns it.
#ifndef RAWDAX_EXPORT_INPUT_COALESCER_H_
#define RAWDAX_EXPORT_INPUT_COALESCER_H_

#include <algorithm>
#include <chrono>
#include <cstdint>

namespace rawdax::nbd {

class InputCoalescer {
 public:
  static constexpr std::chrono::microseconds kPause{100};
  static constexpr uint64_t kMinBatch = 8;
  static constexpr uint64_t kMaxBackoff = 1024;

  // Called when the session's input is drained at a request boundary and its
  // replies are sent, about to wait for more; `served` is how many requests
  // came in the first receive after the previous call. True: pause kPause
  // first.
  bool pause_before_wait(uint64_t served) {
    if (paused_) {
      paused_ = false;
      if (served >= kMinBatch && served < depth_) {
        backoff_ = 0;
      } else {
        backoff_ = std::min(backoff_ == 0 ? 1 : backoff_ * 2, kMaxBackoff);
        skip_ = backoff_;
      }
    }
    depth_ = std::max(depth_, served);
    if (skip_ > 0) {
      --skip_;
      return false;
    }
    paused_ = true;
    return true;
  }

 private:
  bool paused_ = false;   // the last wait was preceded by a pause
  uint64_t depth_ = 0;    // the most requests `served` ever reported
  uint64_t backoff_ = 0;  // the current run of skipped waits after a failed pause
  uint64_t skip_ = 0;     // waits left to go without a pause
};

}  // namespace rawdax::nbd

#endif  // RAWDAX_EXPORT_INPUT_COALESCER_H_
