/* A C client of `rawdax serve`: lists the namespaces, opens one, stores
 * through a shared mapping of the fd the daemon passes, and releases it.
 *
 *   client SOCKET [NAMESPACE]     (NAMESPACE defaults to "default")
 */
#include <rawdax/client_c.h>

#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s SOCKET [NAMESPACE]\n", argv[0]);
    return 2;
  }
  const char* name = argc > 2 ? argv[2] : "default";
  rawdax_client* client = NULL;
  int rc = rawdax_client_connect(argv[1], &client);
  if (rc != 0) {
    fprintf(stderr, "connect %s: %s\n", argv[1], strerror(-rc));
    return 1;
  }
  char* list = NULL;
  if (rawdax_client_execute(client, "query-namespaces", NULL, &list) != 0) {
    fprintf(stderr, "query-namespaces: %s\n", rawdax_client_error(client));
    rawdax_client_close(client);
    return 1;
  }
  printf("%s\n", list);
  rawdax_free(list);

  int fd = -1;
  uint64_t size = 0;
  if (rawdax_client_open(client, name, /*writable=*/1, /*exclusive=*/1, &fd, &size) != 0) {
    fprintf(stderr, "open %s: %s\n", name, rawdax_client_error(client));
    rawdax_client_close(client);
    return 1;
  }
  char* p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    perror("mmap");
    close(fd);
    rawdax_client_close(client);
    return 1;
  }
  strcpy(p, "hello from C");  /* a plain store into the namespace */
  printf("%s: %llu bytes, wrote \"%s\"\n", name, (unsigned long long)size, p);
  munmap(p, 4096);
  close(fd);
  rc = rawdax_client_release(client, name);
  rawdax_client_close(client);
  return rc == 0 ? 0 : 1;
}
