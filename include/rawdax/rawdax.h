// rawdax: exclusive, filesystem-free load/store access to persistent-memory
// namespaces, with a block face over the same bytes. Include this header for
// the whole public API (namespace rawdax).
#ifndef RAWDAX_RAWDAX_H_
#define RAWDAX_RAWDAX_H_

#include "rawdax/capabilities.h"
#include "rawdax/client.h"
#include "rawdax/device.h"
#include "rawdax/mapping.h"
#include "rawdax/namespace.h"
#include "rawdax/nbd_server.h"
#include "rawdax/region.h"
#include "rawdax/result.h"
#include "rawdax/snapshot.h"

#endif  // RAWDAX_RAWDAX_H_
