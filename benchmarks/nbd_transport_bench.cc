// How should the NBD server wait for and answer requests? This models the
// server's hot loop on a unix socketpair, with the same client for every
// variant (one thread, 32 4 KiB reads in flight, one send per request and a
// recv for each reply header and payload, as libnbd does), and prints
// requests per second for each:
//
//   thread+batch    one blocking thread per connection; recv whatever came,
//                   answer every whole request, send all replies at once
//   thread+each     the same, one send per reply
//   epoll+batch     non-blocking socket, epoll_wait before each recv
//   io_uring+batch  recv and send submitted to io_uring, one wait per batch
//   handoff         a reader thread queues requests to a worker thread that
//                   answers them under a send lock (a thread-pool server)
//
//   build/benchmarks/nbd_transport_bench [requests] [rounds]
//
// The reply data is memcpy'd from a 64 MiB buffer, as the device does.
#include <liburing.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr size_t kReq = 28;     // request header
constexpr size_t kHdr = 16;     // simple reply header
constexpr size_t kData = 4096;  // read length
constexpr int kDepth = 32;
constexpr size_t kStore = 64 << 20;

std::vector<char> g_store(kStore, 7);

bool send_all(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t k = ::send(fd, p, n, MSG_NOSIGNAL);
    if (k <= 0) return false;
    p += k;
    n -= static_cast<size_t>(k);
  }
  return true;
}

bool recv_all(int fd, char* p, size_t n) {
  while (n > 0) {
    ssize_t k = ::recv(fd, p, n, 0);
    if (k <= 0) return false;
    p += k;
    n -= static_cast<size_t>(k);
  }
  return true;
}

// The request's offset: a pseudo-random 4 KiB block of the store.
uint64_t offset_of(uint64_t i) { return (i * 2654435761u) % (kStore / kData) * kData; }

void client(int fd, uint64_t total) {
  char req[kReq] = {};
  auto send_req = [&](uint64_t i) {
    uint64_t off = offset_of(i);
    std::memcpy(req + 16, &off, 8);
    send_all(fd, req, kReq);
  };
  uint64_t sent = 0;
  for (; sent < std::min<uint64_t>(kDepth, total); ++sent) send_req(sent);
  std::vector<char> reply(kHdr + kData);
  for (uint64_t done = 0; done < total; ++done) {
    recv_all(fd, reply.data(), kHdr);
    recv_all(fd, reply.data() + kHdr, kData);
    if (sent < total) send_req(sent++);
  }
  ::shutdown(fd, SHUT_WR);
}

// Appends the reply for one request at `req` to `out`.
void answer(const char* req, std::vector<char>& out) {
  uint64_t off;
  std::memcpy(&off, req + 16, 8);
  size_t at = out.size();
  out.resize(at + kHdr + kData);
  std::memset(out.data() + at, 0, kHdr);
  std::memcpy(out.data() + at + kHdr, g_store.data() + off, kData);
}

// Answers every whole request in [in, in+len); returns the bytes used.
size_t answer_all(const char* in, size_t len, std::vector<char>& out, int fd, bool each) {
  size_t used = 0;
  while (len - used >= kReq) {
    answer(in + used, out);
    used += kReq;
    if (each) {
      send_all(fd, out.data(), out.size());
      out.clear();
    }
  }
  return used;
}

void server_thread(int fd, bool each) {
  std::vector<char> in(256 << 10), out;
  size_t have = 0;
  while (true) {
    ssize_t k = ::recv(fd, in.data() + have, in.size() - have, 0);
    if (k <= 0) return;
    have += static_cast<size_t>(k);
    size_t used = answer_all(in.data(), have, out, fd, each);
    std::memmove(in.data(), in.data() + used, have - used);
    have -= used;
    if (!out.empty()) send_all(fd, out.data(), out.size());
    out.clear();
  }
}

void server_epoll(int fd) {
  int ep = ::epoll_create1(0);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ::epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
  std::vector<char> in(256 << 10), out;
  size_t have = 0;
  while (true) {
    epoll_event got;
    if (::epoll_wait(ep, &got, 1, -1) < 0) continue;
    ssize_t k = ::recv(fd, in.data() + have, in.size() - have, MSG_DONTWAIT);
    if (k == 0 || (k < 0 && errno != EAGAIN)) break;
    if (k < 0) continue;
    have += static_cast<size_t>(k);
    size_t used = answer_all(in.data(), have, out, fd, false);
    std::memmove(in.data(), in.data() + used, have - used);
    have -= used;
    if (!out.empty()) send_all(fd, out.data(), out.size());
    out.clear();
  }
  ::close(ep);
}

void server_uring(int fd) {
  io_uring ring;
  if (io_uring_queue_init(8, &ring, 0) != 0) {
    std::fprintf(stderr, "io_uring_queue_init failed\n");
    return;
  }
  std::vector<char> in(256 << 10), out;
  size_t have = 0;
  while (true) {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring);
    io_uring_prep_recv(sqe, fd, in.data() + have, in.size() - have, 0);
    io_uring_submit_and_wait(&ring, 1);
    io_uring_cqe* cqe;
    io_uring_wait_cqe(&ring, &cqe);
    int k = cqe->res;
    io_uring_cqe_seen(&ring, cqe);
    if (k <= 0) break;
    have += static_cast<size_t>(k);
    size_t used = answer_all(in.data(), have, out, fd, false);
    std::memmove(in.data(), in.data() + used, have - used);
    have -= used;
    size_t off = 0;
    while (off < out.size()) {  // a send that the ring completes in full, or loop
      sqe = io_uring_get_sqe(&ring);
      io_uring_prep_send(sqe, fd, out.data() + off, out.size() - off, MSG_NOSIGNAL);
      io_uring_submit_and_wait(&ring, 1);
      io_uring_wait_cqe(&ring, &cqe);
      int s = cqe->res;
      io_uring_cqe_seen(&ring, cqe);
      if (s <= 0) break;
      off += static_cast<size_t>(s);
    }
    out.clear();
  }
  io_uring_queue_exit(&ring);
}

void server_handoff(int fd) {
  std::mutex mu, send_mu;
  std::condition_variable cv;
  std::deque<std::string> queue;
  bool eof = false;
  std::thread worker([&] {
    std::vector<char> out;
    while (true) {
      std::string req;
      {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return eof || !queue.empty(); });
        if (queue.empty()) return;
        req = std::move(queue.front());
        queue.pop_front();
      }
      answer(req.data(), out);
      std::lock_guard<std::mutex> lock(send_mu);
      send_all(fd, out.data(), out.size());
      out.clear();
    }
  });
  char req[kReq];
  while (recv_all(fd, req, kReq)) {
    std::lock_guard<std::mutex> lock(mu);
    queue.emplace_back(req, kReq);
    cv.notify_one();
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    eof = true;
  }
  cv.notify_one();
  worker.join();
}

double run_once(const std::function<void(int)>& server, uint64_t total) {
  int sv[2];
  ::socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
  auto start = std::chrono::steady_clock::now();
  std::thread s([&] { server(sv[1]); });
  client(sv[0], total);
  s.join();
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ::close(sv[0]);
  ::close(sv[1]);
  return total / secs;
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t total = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 200000;
  int rounds = argc > 2 ? std::atoi(argv[2]) : 5;
  struct Variant {
    const char* name;
    std::function<void(int)> server;
    double best = 0;
  } variants[] = {
      {"thread+batch", [](int fd) { server_thread(fd, false); }},
      {"thread+each", [](int fd) { server_thread(fd, true); }},
      {"epoll+batch", server_epoll},
      {"io_uring+batch", server_uring},
      {"handoff", server_handoff},
  };
  // Rounds interleave the variants so that a noisy neighbour hits them all.
  for (int r = 0; r < rounds; ++r) {
    for (auto& v : variants) v.best = std::max(v.best, run_once(v.server, total));
  }
  std::printf("%-16s %14s %8s\n", "variant", "requests/s", "ratio");
  for (auto& v : variants) {
    std::printf("%-16s %14.0f %7.2fx\n", v.name, v.best, v.best / variants[0].best);
  }
  return 0;
}
