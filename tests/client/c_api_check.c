/* Compiled as C: the C header must stand alone, and its calls must work.
 * Called from c_api_test.cc. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "rawdax/client_c.h"

/* Returns 0, or the number of the step that failed (with a message). */
int rawdax_c_api_check(const char* socket_path, char* message, size_t message_size) {
  rawdax_client* client = NULL;
  int rc = rawdax_client_connect(socket_path, &client);
  if (rc != 0 || client == NULL) {
    snprintf(message, message_size, "connect: %d", rc);
    return 1;
  }
  char* reply = NULL;
  rc = rawdax_client_execute(client, "query-namespaces", NULL, &reply);
  if (rc != 0 || reply == NULL || strstr(reply, "\"vm1\"") == NULL) {
    snprintf(message, message_size, "query-namespaces: %d %s", rc, rawdax_client_error(client));
    rawdax_free(reply);
    rawdax_client_close(client);
    return 2;
  }
  rawdax_free(reply);
  rc = rawdax_client_execute(client, "no-such-command", "{}", NULL);
  if (rc != -ENOSYS || strlen(rawdax_client_error(client)) == 0) {
    snprintf(message, message_size, "unknown command gave %d", rc);
    rawdax_client_close(client);
    return 3;
  }
  rc = rawdax_client_open(client, "nosuch", 1, 0, &(int){0}, NULL);
  if (rc != -ENOENT) {
    snprintf(message, message_size, "open of a missing namespace gave %d", rc);
    rawdax_client_close(client);
    return 4;
  }
  int fd = -1;
  uint64_t size = 0;
  rc = rawdax_client_open(client, "vm1", 1, 1, &fd, &size);
  if (rc != 0 || fd < 0 || size == 0) {
    snprintf(message, message_size, "open: %d %s", rc, rawdax_client_error(client));
    rawdax_client_close(client);
    return 5;
  }
  char* p = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    snprintf(message, message_size, "mmap: %s", strerror(errno));
    close(fd);
    rawdax_client_close(client);
    return 6;
  }
  memcpy(p + 512, "from C", 7);
  munmap(p, (size_t)size);
  close(fd);
  rc = rawdax_client_release(client, "vm1");
  if (rc != 0) {
    snprintf(message, message_size, "release: %d %s", rc, rawdax_client_error(client));
    rawdax_client_close(client);
    return 7;
  }
  rawdax_client_close(client);
  return 0;
}
