// LazyFill: one lazy restore of a snapshot chain into a namespace, from the
// moment its backing object is named until every page the chain stores is
// in place (docs/snapshot.md "Lazy restore").
//
// The namespace is usable at once: its device core holds page_fill() and
// fills the pages an access touches on demand (device/page_fill.h), while a
// background thread owned by this object fills the rest in page order. When
// every page is in place the thread makes them durable (fdatasync), then
// drops the namespace's restore marker from the region's metadata
// (Catalog::clear_restore): until then a crash leaves a fill that resume()
// continues.
//
// The crash rule (directory media; memfd regions die with the process):
// after the restore began, a page of the backing file holds data only if the
// fill wrote it or the user wrote it (the device fills a page before any
// write to it, and zeroes without punching while the fill runs). So on
// resume, the pages that the chain stores and that lie in a hole of the file
// (SEEK_DATA/SEEK_HOLE) are exactly the ones still to fill, and every other
// page already holds the image or the user's later writes.
//
// Thread safety: every method is thread-safe. Ownership: the Region owns the
// LazyFill (and so the thread: the destructor stops it at the next batch and
// joins it, leaving the marker for a later resume); device cores share the
// PageFill and the chain it reads, so they outlive it safely.
#ifndef RAWDAX_SNAPSHOT_LAZY_RESTORE_H_
#define RAWDAX_SNAPSHOT_LAZY_RESTORE_H_

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "device/page_fill.h"
#include "rawdax/namespace.h"
#include "rawdax/result.h"
#include "region/catalog.h"
#include "snapshot/snapshot_file.h"

namespace rawdax::internal {

// The media a lazy restore works on: those whose backing objects tell
// filled pages from unfilled ones (holes), or that do not outlive the
// process. ENOTSUP naming the media and why otherwise.
Status check_lazy_media(const Catalog& catalog, const std::string& what);

class LazyFill {
 public:
  // Starts the fill of namespace `ns` (installed with its restore marker),
  // whose backing object `fd` holds none of the chain's pages yet.
  static Result<std::unique_ptr<LazyFill>> start(std::shared_ptr<Catalog> catalog,
                                                 const NamespaceInfo& ns, UniqueFd fd,
                                                 std::vector<SnapshotFile> chain);
  // Continues the fill of `ns`, whose metadata carries a restore marker,
  // after a crash: the marker's snapshot must still have the recorded header
  // checksum, and its chain must verify. Errors name the namespace, the
  // snapshot and how to get out (restore again, or destroy).
  static Result<std::unique_ptr<LazyFill>> resume(std::shared_ptr<Catalog> catalog,
                                                  const NamespaceInfo& ns);
  ~LazyFill();  // stops the background pass and joins it
  LazyFill(const LazyFill&) = delete;
  LazyFill& operator=(const LazyFill&) = delete;

  const std::shared_ptr<PageFill>& page_fill() const { return fill_; }
  // Every page in place and the marker dropped.
  bool done() const;
  // The marker and this process's progress (filling, pages, error).
  RestoreState state() const;
  // Returns once the fill is done (ok) or the background pass stopped on an
  // error (that error).
  Status wait() const;

 private:
  LazyFill(std::shared_ptr<Catalog> catalog, NamespaceInfo ns,
           std::shared_ptr<PageFill> fill);
  void run();

  const std::shared_ptr<Catalog> catalog_;
  const NamespaceInfo ns_;  // name, uuid and the marker
  const std::shared_ptr<PageFill> fill_;
  std::atomic<bool> stop_{false};
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  bool finished_ = false;    // guarded by mu_: the pass ended (done or failed)
  bool done_ = false;        // guarded by mu_
  Status result_;            // guarded by mu_
  std::thread thread_;       // last: started once everything above exists
};

}  // namespace rawdax::internal

#endif  // RAWDAX_SNAPSHOT_LAZY_RESTORE_H_
