// MappingObserver: how a layer above the device (the protection engine)
// follows the life of every mapping without the device calling upward. The
// device calls one observer, installed before any mapping exists; it does not
// own it: the owner of both (internal::OpenNamespace) keeps the observer
// alive while the device has a mapping.
//
// Every call is made with the device's mapping-registry lock held, so the
// observer sees map, unmap and revoke events of one device in order, and a
// record is never unmapped or revoked while a call about it runs. Lock order:
// registry lock, then any lock the observer takes.
#ifndef RAWDAX_DEVICE_MAPPING_OBSERVER_H_
#define RAWDAX_DEVICE_MAPPING_OBSERVER_H_

#include "rawdax/result.h"

namespace rawdax::internal {

struct MappingRecord;

class MappingObserver {
 public:
  virtual ~MappingObserver() = default;
  // After the mmap, before map() returns. An error unmaps the range and fails map().
  virtual Status on_map(MappingRecord& record) = 0;
  // Before the munmap of a Mapping being destroyed (revoked or not).
  virtual void on_unmap(MappingRecord& record) = 0;
  // After the record's pages were replaced by the SIGBUS placeholder.
  virtual void on_revoked(MappingRecord& record) = 0;
  // Whether the observer resolves faults on pages missing from the backing
  // object (a lazy restore's unfilled pages) through DeviceCore::fault_in,
  // for every mapping on_map() sees while DeviceCore::filling(). Then map()
  // maps unfilled pages at once instead of filling its range first.
  virtual bool fills_missing_pages() const { return false; }
};

}  // namespace rawdax::internal

#endif  // RAWDAX_DEVICE_MAPPING_OBSERVER_H_
